"""What a CPU measurement ran on, for the records: platform.processor() is "x86_64" on Linux, and two machines with
that name differed threefold on the CPU MoE (bf16): one whose ISA torch reports as AVX512 with native bf16, one with
AVX2 only, where bf16 matmuls run 2.6-4.7x slower than fp32 (16-128 rows; docs/results.md section 15). SD's gain on
a compute-bound target follows, so a record names the CPU model and torch's kernel ISA."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The model name in /proc/cpuinfo (Linux), or what platform reports elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> str:
    """e.g. "AMD EPYC, AVX2 kernels": the model and the vector ISA torch's CPU kernels dispatch to."""
    import torch

    return f"{cpu_model()}, {torch.backends.cpu.get_cpu_capability()} kernels"
