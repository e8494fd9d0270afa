"""Derive the fitted execution profiles (src/moesd/perf/profiles.py records what this prints).

- vllm-v0: MoESD Table 1's 12 Qwen2-57B-A14B + Qwen2-0.5B cells (2xA800) only;
- hf-eager: results/h200_hf_eager/dense_twin.jsonl only (a dense 16-layer target, a 2-layer draft, H200).

    .venv/bin/python benchmarks/derive_profiles.py
"""

from __future__ import annotations

import json
from pathlib import Path

from moesd.perf.validation import fit_hf_eager, fit_vllm_v0

ROOT = Path(__file__).resolve().parent.parent
H200 = ROOT / "results" / "h200_hf_eager"


def main() -> None:
    v0, info = fit_vllm_v0()
    print(f"vllm-v0 (fit on {info['cells']} Table 1 cells; |error| median {info['median_abs_pct_error']:.1f} %, "
          f"max {info['max_abs_pct_error']:.1f} %):")
    print(f"  draft_layer_s={v0.draft_layer_s * 1e3:.4f} ms, sd_step_s={v0.sd_step_s * 1e3:.4f} ms, "
          f"bandwidth_efficiency={v0.bandwidth_efficiency:.4f}")
    records = [json.loads(line) for line in (H200 / "dense_twin.jsonl").read_text().splitlines() if line.strip()]
    eager, info = fit_hf_eager(records, str(H200 / "dense_twin.json"), str(H200 / "draft.json"))
    print(f"hf-eager (from dense_twin.jsonl: decode {info['decode_s'] * 1e3:.2f} ms, draft {info['draft_s'] * 1e3:.2f} ms "
          f"medians):")
    print(f"  forward_s={eager.forward_s * 1e3:.4f} ms, layer_s={eager.layer_s * 1e3:.4f} ms, "
          f"sd_step_s={eager.sd_step_s * 1e3:.4f} ms")


if __name__ == "__main__":
    main()
