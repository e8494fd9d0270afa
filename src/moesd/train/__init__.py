"""Training small models the project can ship: a stdlib-trained MoE target, its dense draft, and a
draft distilled from SmolLM2-135M-Instruct (`moesd train target|draft|distill`)."""
