"""Batched, lossless speculative decoding on Hugging Face causal LMs (dense and MoE), with per-stage
timing and per-layer expert counts. Imports torch; `moesd.perf` never imports this package."""
