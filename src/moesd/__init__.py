"""moesd: predict, measure and accelerate speculative decoding on Mixture-of-Experts models."""

__version__ = "0.1.0"
