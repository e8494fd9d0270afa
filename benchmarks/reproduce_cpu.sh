#!/usr/bin/env bash
# The CPU reproduction of MoESD's claims (docs/results.md section 9). About an hour on 2 cores.
# Random-weight bf16 Qwen3-MoE (E=64, K=8, 1.7 GB, docs/notes/offline.md section 6) and its dense twin of equal active
# parameters; a 3.7 M-parameter random draft whose cost is real, with synthetic acceptance at the alpha that
# prompt lookup reached on SmolLM2-135M-Instruct over HumanEval at temperature 0 (results/smollm2_ngram_humaneval.jsonl).
# Re-running resumes: completed points are kept and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
MOESD=.venv/bin/moesd
ALPHA=${ALPHA:-0.44}
B=1,2,4,8,16,32,64
COMMON=(--draft benchmarks/configs/cpu_draft.json --draft-method synthetic --alpha "$ALPHA" --workload humaneval
        --max-prompt-tokens 64 --max-new-tokens 32 --repeats 3 --warmup 1 --batch-sizes "$B" --resume)
# 1, 3, 5: MoE vs dense, target efficiency, distinct experts, under both routings
$MOESD bench --target benchmarks/configs/cpu_moe_e64k8.json --routing uniform,model --gammas 2,4 "${COMMON[@]}" -o results/cpu_moe.jsonl
$MOESD bench --target benchmarks/configs/cpu_dense_twin.json --gammas 2,4 "${COMMON[@]}" -o results/cpu_dense.jsonl
# 2: sparsity sweep (K = 8 is in cpu_moe.jsonl)
$MOESD bench --target benchmarks/configs/cpu_moe_e64k8.json --routing uniform --gammas 4 --experts-per-token 2,4 "${COMMON[@]}" -o results/cpu_moe_ksweep.jsonl
