"""Measurement side of moesd: hardware calibration now; workloads, sweeps and reports later."""
