"""Execution profiles: the costs a real engine pays besides bytes and FLOPs.

Algorithm 1 prices weight loads and compute. A serving engine also pays, in every forward, a fixed cost for
kernel launches and framework time that grows with the number of layers, and in every SD round a cost for
proposing and scoring bookkeeping; with tensor parallelism it pays two all-reduces per layer. On a GPU these
costs, not bytes, often decide the speedup (`docs/notes/gpu-h200.md`: a 7 B MoE decode step of 37 ms against a
0.49 ms floor under transformers eager). A profile names these costs for one kind of engine; the prior adds
them to Algorithm 1's fixed terms:

    bias        += forward_s + layer_s * layers + moe_layer_s * MoE layers + 2 * layers * allreduce(tp)
    draft_bias  += draft_forward_s + draft_layer_s * draft layers + moe_layer_s * draft MoE layers
    reject_bias += sd_step_s                       (once per SD round; the autoregressive step has none)

and scales peak bandwidth and FLOP/s by the efficiencies. Every number carries its source and date;
`benchmarks/derive_profiles.py` re-derives the ones we fitted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from moesd.errors import MoesdError


@dataclass(frozen=True)
class ExecutionProfile:
    name: str
    description: str
    source: str
    forward_s: float = 0.0  # fixed cost of one target forward
    layer_s: float = 0.0  # fixed cost per target layer per forward
    draft_forward_s: float = 0.0  # fixed cost of one draft forward (drafts are often not graph-captured)
    draft_layer_s: float = 0.0  # per draft layer per forward
    moe_layer_s: float = 0.0  # extra fixed cost of an MoE layer over a dense one (routing, sorting, gathers)
    sd_step_s: float = 0.0  # per SD round: proposal and scoring bookkeeping the autoregressive step lacks
    allreduce_hop_s: float = 0.0  # latency of one ring step of a TP all-reduce
    bandwidth_efficiency: float = 1.0
    flops_efficiency: float = 1.0

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if isinstance(v, float) and not (math.isfinite(v) and v >= 0):
                raise MoesdError(f"profile {self.name}: {k} must be a finite number >= 0, got {v}")
        if not (0 < self.bandwidth_efficiency <= 1 and 0 < self.flops_efficiency <= 1):
            raise MoesdError(f"profile {self.name}: efficiencies must lie in (0, 1]")

    def target_fixed_s(self, num_layers: int, num_moe_layers: int, tp: int) -> float:
        # Two all-reduces per layer (after attention and after the FFN), each 2 (tp - 1) ring steps.
        allreduce = 2 * num_layers * 2 * (tp - 1) * self.allreduce_hop_s
        return self.forward_s + self.layer_s * num_layers + self.moe_layer_s * num_moe_layers + allreduce

    def draft_fixed_s(self, num_layers: int, num_moe_layers: int) -> float:
        return self.draft_forward_s + self.draft_layer_s * num_layers + self.moe_layer_s * num_moe_layers

    def to_dict(self) -> dict:
        return asdict(self)


_US = 1e-6
_MS = 1e-3

PROFILES: dict[str, ExecutionProfile] = {p.name: p for p in (
    ExecutionProfile(
        "roofline", "bytes and FLOPs only, at peak: the paper's physical lower bound (no overheads)",
        "MoESD Eq. 1 / Algorithm 1; no engine costs"),
    ExecutionProfile(
        "cuda-graph", "CUDA-graph serving engines (vLLM v1, SGLang, TensorRT-LLM): draft and target captured",
        # sgl-project/SpecForge#339 (read 2026-11-27, docs/notes/anchors.md section 5): Qwen3-30B-A3B on
        # 2xH100 TP2 decodes at 222.47 tok/s at batch 1, 4.49 ms per step; its bytes at batch 1 (non-expert
        # weights plus 8 experts in each of 48 layers, 6.1 GB over 2 x 3.35 TB/s) take 0.91 ms. The rest,
        # 3.6 ms over 48 layers, is 75 us per layer, all-reduces included; we charge 60 us per layer plus
        # an NCCL ring step of 3.5 us (2 all-reduces x 2 steps at TP2 = 14 us per layer).
        "derived from sgl-project/SpecForge#339 (Qwen3-30B-A3B, 2xH100, bs 1: 4.49 ms/step), 2026-11-27",
        forward_s=0.0, layer_s=60 * _US, draft_forward_s=0.0, draft_layer_s=60 * _US, sd_step_s=0.5 * _MS,
        allreduce_hop_s=3.5 * _US, bandwidth_efficiency=0.8, flops_efficiency=0.7),
    ExecutionProfile(
        "vllm-v0", "vLLM V0 spec decode as the paper ran it: target CUDA-graph captured, draft and SD "
                   "bookkeeping not",
        # Fitted by benchmarks/derive_profiles.py to the 12 Qwen2-57B-A14B + Qwen2-0.5B cells of MoESD
        # Table 1 (2xA800) only; Table 2 (2xH800, 4xA800, 4xL40) is held out. Target layer cost and the
        # all-reduce step are taken from the cuda-graph profile (2xA800 alone cannot separate them).
        "fitted to MoESD Table 1 (Qwen2 rows, 2xA800) by benchmarks/derive_profiles.py, 2026-11-27",
        layer_s=60 * _US, allreduce_hop_s=3.5 * _US, draft_layer_s=0.1932 * _MS, sd_step_s=9.9729 * _MS,
        bandwidth_efficiency=0.9999, flops_efficiency=1.0),
    ExecutionProfile(
        "hf-eager", "Hugging Face transformers, eager PyTorch on a GPU (what `moesd generate --device cuda` runs)",
        # Derived by benchmarks/derive_profiles.py from results/h200_hf_eager/dense_twin.jsonl only
        # (16-layer dense target at 10-13 ms per decode, 2-layer draft at 2.6-3.4 ms per token, H200); the
        # MoE block's extra host time (1.8 ms per layer) is the torch profile of docs/notes/gpu-h200.md
        # ("transformers' MoE block alone costs ~2 ms of host time per layer", less a dense MLP's ~0.2 ms).
        "results/h200_hf_eager/dense_twin.jsonl (H200, 2026-11-27) by benchmarks/derive_profiles.py; "
        "MoE block: the torch profile of docs/notes/gpu-h200.md",
        forward_s=1.6009 * _MS, layer_s=0.6041 * _MS, draft_forward_s=1.6009 * _MS, draft_layer_s=0.6041 * _MS,
        moe_layer_s=1.8 * _MS, sd_step_s=2.2539 * _MS, bandwidth_efficiency=1.0, flops_efficiency=1.0),
    ExecutionProfile(
        "cpu", "this project's engine on a CPU: compute and bandwidth bound, overheads about 1 %",
        # results/cpu_*.jsonl: time outside forwards 1-2 % of a step (docs/results.md); the hardware file from
        # `moesd calibrate` already holds the bandwidth and GEMM rate actually reached.
        "our CPU sweeps (results/cpu_*.jsonl, 2026): outside-forward time 1-2 %; use with `moesd calibrate`",
        sd_step_s=0.2 * _MS),
)}


def default_profile_name(hardware_name: str) -> str:
    return "cpu" if hardware_name.lower().startswith("cpu") else "cuda-graph"


def resolve_profile(name: str | None, hardware_name: str) -> ExecutionProfile:
    name = name or default_profile_name(hardware_name)
    try:
        return PROFILES[name]
    except KeyError:
        raise MoesdError(f"unknown engine profile {name!r} (use {', '.join(PROFILES)})") from None
