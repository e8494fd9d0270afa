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
    # Per-device, per-direction bandwidth of the scale-up link TP / EP collectives use (NVLink, Infinity
    # Fabric, RoCE ports on Gaudi); 0 = none or not published (PCIe-only cards: the all-reduce crosses PCIe).
    interconnect_bytes_per_s: float = 0.0

    def __post_init__(self) -> None:
        for field in ("memory_bandwidth_bytes_per_s", "peak_bf16_flops_per_s", "memory_bytes"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise MoesdError(f"hardware {self.name}: {field} must be a positive number, got {value!r}")
        for field in ("bandwidth_efficiency", "flops_efficiency"):
            value = getattr(self, field)
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise MoesdError(f"hardware {self.name}: {field} must lie in (0, 1], got {value!r}")
        link = self.interconnect_bytes_per_s
        if isinstance(link, bool) or not (isinstance(link, (int, float)) and math.isfinite(link) and link >= 0):
            raise MoesdError(f"hardware {self.name}: interconnect_bytes_per_s must be a number >= 0, got {link!r}")

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
        # --- NVIDIA Ampere / Hopper / Blackwell data-centre parts. Vendors quote BF16 "with sparsity";
        # the presets hold the dense figure (half), which is what a decoding GEMM can reach.
        Hardware("A800-80GB", 2039 * _GB, 312 * _TFLOPS, 80 * _GIB,
                 "NVIDIA A800 80GB SXM datasheet: 2,039 GB/s HBM2e, 312 TFLOPS BF16 dense, NVLink 400 GB/s",
                 interconnect_bytes_per_s=200 * _GB),
        Hardware("A100-80GB", 2039 * _GB, 312 * _TFLOPS, 80 * _GIB,
                 "NVIDIA A100 datasheet (80GB SXM): 2,039 GB/s HBM2e, 312 TFLOPS BF16 dense, NVLink 600 GB/s",
                 interconnect_bytes_per_s=300 * _GB),
        Hardware("A100-40GB", 1555 * _GB, 312 * _TFLOPS, 40 * _GIB,
                 "NVIDIA A100 datasheet (40GB SXM): 1,555 GB/s HBM2, 312 TFLOPS BF16 dense, NVLink 600 GB/s",
                 interconnect_bytes_per_s=300 * _GB),
        Hardware("H800", 3350 * _GB, 989.5 * _TFLOPS, 80 * _GIB,
                 "NVIDIA H800 SXM5 datasheet: 3.35 TB/s HBM3, 1,979 TFLOPS BF16 with sparsity (989.5 dense), NVLink 400 GB/s",
                 interconnect_bytes_per_s=200 * _GB),
        Hardware("H100-SXM", 3350 * _GB, 989.5 * _TFLOPS, 80 * _GIB,
                 "NVIDIA H100 datasheet (SXM5): 3.35 TB/s HBM3, 1,979 TFLOPS BF16 with sparsity (989.5 dense), NVLink 900 GB/s",
                 interconnect_bytes_per_s=450 * _GB),
        Hardware("H100-PCIe", 2000 * _GB, 756 * _TFLOPS, 80 * _GIB,
                 "NVIDIA H100 datasheet (PCIe): 2 TB/s HBM2e, 1,513 TFLOPS BF16 with sparsity (756 dense), NVLink bridge 600 GB/s",
                 interconnect_bytes_per_s=300 * _GB),
        Hardware("H20", 4000 * _GB, 148 * _TFLOPS, 96 * _GB,
                 "NVIDIA H20 product brief: 96 GB HBM3 at 4.0 TB/s, 148 TFLOPS BF16 dense, NVLink 900 GB/s",
                 interconnect_bytes_per_s=450 * _GB),
        Hardware("H200", 4800 * _GB, 989.5 * _TFLOPS, 141 * _GB,
                 "NVIDIA H200 datasheet (SXM): 4.8 TB/s HBM3e, 1,979 TFLOPS BF16 with sparsity (989.5 dense), 141 GB, NVLink 900 GB/s",
                 interconnect_bytes_per_s=450 * _GB),
        Hardware("B200", 8000 * _GB, 2250 * _TFLOPS, 180 * _GB,
                 "NVIDIA DGX B200 datasheet, per GPU (1/8): 180 GB HBM3e at 8 TB/s, 4.5 PFLOPS BF16 with sparsity "
                 "(2.25 dense), NVLink 5 1.8 TB/s",
                 interconnect_bytes_per_s=900 * _GB),
        Hardware("GB200", 8000 * _GB, 2500 * _TFLOPS, 186 * _GB,
                 "NVIDIA GB200 NVL72 datasheet, per Blackwell GPU (1/2 superchip): 186 GB HBM3e at 8 TB/s, "
                 "5 PFLOPS BF16 with sparsity (2.5 dense), NVLink 5 1.8 TB/s",
                 interconnect_bytes_per_s=900 * _GB),
        Hardware("L40", 864 * _GB, 181.05 * _TFLOPS, 48 * _GIB,
                 "NVIDIA L40 datasheet: 864 GB/s GDDR6, 362.1 TFLOPS BF16 with sparsity (181.05 dense), PCIe Gen4 only"),
        Hardware("L4", 300 * _GB, 121 * _TFLOPS, 24 * _GIB,
                 "NVIDIA L4 datasheet: 24 GB GDDR6 at 300 GB/s, 242 TFLOPS BF16 with sparsity (121 dense), PCIe Gen4 only"),
        Hardware("A10G", 600 * _GB, 125 * _TFLOPS, 24 * _GIB,
                 "AWS EC2 G5 (A10G): 24 GB GDDR6 at 600 GB/s; NVIDIA publishes no A10G tensor figure, so the A10 "
                 "datasheet's 125 TFLOPS BF16 dense stands in as an upper bound; PCIe only"),
        Hardware("RTX-4090", 1008 * _GB, 165.2 * _TFLOPS, 24 * _GIB,
                 "NVIDIA Ada Lovelace architecture whitepaper (RTX 4090): 1,008 GB/s GDDR6X, 165.2 TFLOPS BF16 "
                 "dense with FP32 accumulate (what PyTorch uses); no NVLink"),
        Hardware("RTX-3090", 936 * _GB, 71 * _TFLOPS, 24 * _GIB,
                 "NVIDIA Ampere GA102 whitepaper (RTX 3090): 936 GB/s GDDR6X, 71 TFLOPS BF16 dense with FP32 "
                 "accumulate; NVLink bridge 112.5 GB/s",
                 interconnect_bytes_per_s=56.25 * _GB),
        # --- AMD Instinct: the datasheets quote dense BF16.
        Hardware("MI300X", 5300 * _GB, 1307.4 * _TFLOPS, 192 * _GB,
                 "AMD Instinct MI300X datasheet: 192 GB HBM3 at 5.3 TB/s, 1,307.4 TFLOPS BF16 dense, "
                 "Infinity Fabric 896 GB/s aggregate peer-to-peer",
                 interconnect_bytes_per_s=448 * _GB),
        Hardware("MI325X", 6000 * _GB, 1307.4 * _TFLOPS, 256 * _GB,
                 "AMD Instinct MI325X datasheet: 256 GB HBM3E at 6 TB/s, 1,307.4 TFLOPS BF16 dense, "
                 "Infinity Fabric 896 GB/s aggregate peer-to-peer",
                 interconnect_bytes_per_s=448 * _GB),
        # --- Intel Gaudi 3 (Gaudi 2's BF16 matrix throughput has no official datasheet figure: not preset).
        Hardware("Gaudi3", 3700 * _GB, 1835 * _TFLOPS, 128 * _GB,
                 "Intel Gaudi 3 AI accelerator white paper: 128 GB HBM2e at 3.7 TB/s, 1,835 TFLOPS BF16 (MME), "
                 "24x 200 GbE RoCE (21 for scale-up: 525 GB/s per direction)",
                 interconnect_bytes_per_s=525 * _GB),
        # Measured on the project's 2-vCPU AMD EPYC (avx512_bf16) development machine with
        # torch.set_num_threads(2): bf16 F.linear at m=1 streams 21.9 GB/s; a bf16 2048^3 GEMM
        # reaches 745 GFLOP/s (docs/notes/offline.md section 5). Recalibrate with a hardware JSON.
        Hardware("cpu", 21.9 * _GB, 745e9, 24 * _GIB,
                 "moesd development CPU, measured (docs/notes/offline.md section 5): 21.9 GB/s bf16 GEMV, 745 GFLOP/s bf16 GEMM"),
    ]
}


# Names users type for the presets: the bare product name means the SXM / 80 GB part (what the presets hold).
HARDWARE_ALIASES = {"h100": "H100-SXM", "h100-sxm5": "H100-SXM", "h100-pcie-80gb": "H100-PCIe",
                    "a100": "A100-80GB", "a100-sxm": "A100-80GB", "a100-80gb-sxm": "A100-80GB",
                    "a100-40gb-sxm": "A100-40GB", "a800": "A800-80GB", "h200-sxm": "H200", "h20-96gb": "H20",
                    "b200-sxm": "B200", "hgx-b200": "B200", "gb200-nvl72": "GB200", "4090": "RTX-4090",
                    "rtx4090": "RTX-4090", "geforce-rtx-4090": "RTX-4090", "3090": "RTX-3090",
                    "rtx3090": "RTX-3090", "geforce-rtx-3090": "RTX-3090", "mi300": "MI300X",
                    "instinct-mi300x": "MI300X", "instinct-mi325x": "MI325X", "gaudi-3": "Gaudi3",
                    "gaudi": "Gaudi3", "hl-325l": "Gaudi3"}


# Devices users ask for that we deliberately do not preset, and why.
NOT_PRESET = {"gaudi2": "Intel publishes no official dense BF16 matrix throughput for Gaudi 2",
              "gaudi-2": "Intel publishes no official dense BF16 matrix throughput for Gaudi 2"}


def hardware_preset(name: str) -> Hardware:
    """A preset by name: case-insensitive, with common aliases (H100 -> H100-SXM); an unknown name lists the
    closest presets."""
    if name in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[name]
    folded = {k.lower(): k for k in HARDWARE_PRESETS}
    key = name.strip().lower().replace("_", "-").replace(" ", "-")
    found = HARDWARE_ALIASES.get(key, folded.get(key, ""))
    if found in HARDWARE_PRESETS:
        return HARDWARE_PRESETS[found]
    import difflib

    if key in NOT_PRESET:
        raise MoesdError(f"no preset for {name!r}: {NOT_PRESET[key]}; pass a hardware JSON file with its fields")
    close = difflib.get_close_matches(key, list(folded) + list(HARDWARE_ALIASES), n=6, cutoff=0.5)
    names = list(dict.fromkeys(folded.get(c) or HARDWARE_ALIASES[c] for c in close))[:3]
    hint = f"; did you mean {', '.join(names)}?" if names else ""
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
