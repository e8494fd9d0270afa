"""Hardware presets: per-device peak memory bandwidth and dense bf16 compute, SI units inside.

The target may span `tp` devices (tensor parallel); the draft always runs on one device, as in
the paper. Efficiencies (fraction of peak actually reached) default to 1.0, so the physical prior
is a roofline bound; set them, or fit, to get realistic times.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from moesd.errors import MoesdError
from moesd.jsonl import read_json


@dataclass(frozen=True)
class Hardware:
    name: str
    memory_bandwidth_bytes_per_s: float  # peak HBM / DRAM bandwidth of one device
    peak_bf16_flops_per_s: float  # dense (no 2:4 sparsity) bf16 tensor throughput of one device
    memory_bytes: float
    source: str
    bandwidth_efficiency: float = 1.0
    flops_efficiency: float = 1.0

    def __post_init__(self) -> None:
        for field in ("memory_bandwidth_bytes_per_s", "peak_bf16_flops_per_s", "memory_bytes"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise MoesdError(f"hardware {self.name}: {field} must be a positive number, got {value!r}")
        for field in ("bandwidth_efficiency", "flops_efficiency"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise MoesdError(f"hardware {self.name}: {field} must lie in (0, 1], got {value!r}")

    @property
    def ridge_point_flops_per_byte(self) -> float:
        """Eq. 1: theoretical ridge point, peak compute / peak bandwidth."""
        return self.peak_bf16_flops_per_s / self.memory_bandwidth_bytes_per_s

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_bytes_per_s * self.bandwidth_efficiency

    @property
    def effective_flops_per_s(self) -> float:
        return self.peak_bf16_flops_per_s * self.flops_efficiency

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> "Hardware":
        p = Path(path)
        data = read_json(p, "hardware file")
        if not isinstance(data, dict):
            raise MoesdError(f"{p}: hardware file must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise MoesdError(f"{p}: unknown hardware fields {sorted(unknown)}")
        missing = {"memory_bandwidth_bytes_per_s", "peak_bf16_flops_per_s"} - set(data)
        if missing:
            raise MoesdError(f"{p}: missing hardware fields {sorted(missing)}")
        data.setdefault("name", p.stem)
        data.setdefault("memory_bytes", 1.0)
        data.setdefault("source", str(p))
        return cls(**data)


_GB = 1e9
_TFLOPS = 1e12
_GIB = 2**30

HARDWARE_PRESETS: dict[str, Hardware] = {
    h.name: h
    for h in [
        Hardware("A800-80GB", 2039 * _GB, 312 * _TFLOPS, 80 * _GIB,
                 "NVIDIA A800 80GB SXM datasheet: 2,039 GB/s HBM2e, 312 TFLOPS BF16 dense"),
        Hardware("A100-80GB", 2039 * _GB, 312 * _TFLOPS, 80 * _GIB,
                 "NVIDIA A100 datasheet (80GB SXM): 2,039 GB/s HBM2e, 312 TFLOPS BF16 dense"),
        Hardware("H800", 3350 * _GB, 989.5 * _TFLOPS, 80 * _GIB,
                 "NVIDIA H800 SXM5 datasheet: 3.35 TB/s HBM3, 1,979 TFLOPS BF16 with sparsity (989.5 dense)"),
        Hardware("H100-SXM", 3350 * _GB, 989.5 * _TFLOPS, 80 * _GIB,
                 "NVIDIA H100 datasheet (SXM5): 3.35 TB/s HBM3, 1,979 TFLOPS BF16 with sparsity (989.5 dense)"),
        Hardware("H200", 4800 * _GB, 989.5 * _TFLOPS, 141 * _GB,
                 "NVIDIA H200 datasheet (SXM): 4.8 TB/s HBM3e, 1,979 TFLOPS BF16 with sparsity (989.5 dense), 141 GB"),
        Hardware("L40", 864 * _GB, 181.05 * _TFLOPS, 48 * _GIB,
                 "NVIDIA L40 datasheet: 864 GB/s GDDR6, 362.1 TFLOPS BF16 with sparsity (181.05 dense)"),
        # Measured on the project's 2-vCPU AMD EPYC (avx512_bf16) development machine with
        # torch.set_num_threads(2): bf16 F.linear at m=1 streams 21.9 GB/s; a bf16 2048^3 GEMM
        # reaches 745 GFLOP/s (docs/notes/offline.md section 5). Recalibrate with a hardware JSON.
        Hardware("cpu", 21.9 * _GB, 745e9, 24 * _GIB,
                 "moesd development CPU, measured (docs/notes/offline.md section 5): 21.9 GB/s bf16 GEMV, 745 GFLOP/s bf16 GEMM"),
    ]
}


# Names users type for the presets: the bare product name means the SXM / 80 GB part (what the presets hold).
HARDWARE_ALIASES = {"h100": "H100-SXM", "h100-sxm5": "H100-SXM", "a100": "A100-80GB", "a100-sxm": "A100-80GB",
                    "a800": "A800-80GB", "h200-sxm": "H200"}


def hardware_preset(name: str) -> Hardware:
    """A preset by name: case-insensitive, with common aliases (H100 -> H100-SXM); an unknown name lists the
    closest presets."""
    if name in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[name]
    folded = {k.lower(): k for k in HARDWARE_PRESETS}
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    key = HARDWARE_ALIASES.get(key, folded.get(key, ""))
    if key in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[key]
    import difflib

    close = difflib.get_close_matches(name.lower(), list(folded) + list(HARDWARE_ALIASES), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(folded.get(c) or HARDWARE_ALIASES[c] for c in close)}?" if close else ""
    raise MoesdError(f"unknown hardware {name!r}{hint} (presets: {', '.join(HARDWARE_PRESETS)}, or a JSON file)")


def resolve_hardware(name_or_path: str, bandwidth_efficiency: float | None = None,
                     flops_efficiency: float | None = None) -> Hardware:
    """A preset name, or a path to a JSON file with Hardware's fields (e.g. a calibrated CPU)."""
    if name_or_path not in HARDWARE_PRESETS and (name_or_path.endswith(".json") or Path(name_or_path).is_file()):
        hw = Hardware.from_file(name_or_path)
    else:
        hw = hardware_preset(name_or_path)
    changes = {}
    if bandwidth_efficiency is not None:
        changes["bandwidth_efficiency"] = bandwidth_efficiency
    if flops_efficiency is not None:
        changes["flops_efficiency"] = flops_efficiency
    return replace(hw, **changes) if changes else hw
