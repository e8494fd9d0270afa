#!/usr/bin/env bash
# Expert budgets on this CPU (docs/results.md section 12): the random-weight E=64/K=8 MoE under uniform
# routing (timing at scale; synthetic acceptance with the real draft's cost) and the trained stdlib MoE with
# its trained draft (real routing, real acceptance, quality that means something). Keep the CPU idle.
set -euo pipefail
cd "$(dirname "$0")/.."
MOESD=.venv/bin/moesd
$MOESD bench --target benchmarks/configs/cpu_moe_e64k8.json --draft benchmarks/configs/cpu_draft.json \
    --draft-method synthetic --alpha 0.44 --routing uniform --workload humaneval --max-prompt-tokens 64 \
    --max-new-tokens 32 --repeats 3 --warmup 1 --batch-sizes 1,4,16 --gammas 4 --expert-budgets 8,16,32 \
    --resume -o results/cpu_moe_budget.jsonl
$MOESD bench --target models/stdlib-moe-e32k4 --draft models/stdlib-draft --workload humaneval \
    --max-new-tokens 64 --repeats 3 --warmup 1 --batch-sizes 1,4,16 --gammas 4 --expert-budgets 4,8,16 \
    --execute-code --resume -o results/stdlib_moe_budget.jsonl
$MOESD budget calibrate --target models/stdlib-moe-e32k4 --draft models/stdlib-draft --workload humaneval \
    --batch-sizes 1,4,16 --gamma 4 --max-kl 0.05 --max-new-tokens 64 -o results/stdlib_moe_budget_calibration.json
$MOESD budget calibrate --target benchmarks/configs/cpu_moe_e64k8.json --draft benchmarks/configs/cpu_draft.json \
    --draft-method model --routing uniform --workload humaneval --batch-sizes 1,4,16 --gamma 4 --max-kl 0.05 \
    --max-prompt-tokens 64 --max-new-tokens 32 --num-prompts 4 -o results/cpu_moe_budget_calibration.json
$MOESD bench --target models/stdlib-moe-e32k4 --draft models/stdlib-draft --workload humaneval \
    --max-new-tokens 64 --repeats 3 --warmup 1 --batch-sizes 4,16 --gammas 4 --expert-budgets 4,8,16 \
    --budget-mode truncation --resume -o results/stdlib_moe_budget_truncation.jsonl
$MOESD report results/cpu_moe_budget.jsonl results/stdlib_moe_budget.jsonl results/stdlib_moe_budget_truncation.jsonl \
    -o docs/figures/budget
.venv/bin/python benchmarks/budget_gain.py results/cpu_moe_budget.jsonl --params results/cpu_moe_uniform_params.json \
    --target benchmarks/configs/cpu_moe_e64k8.json --draft benchmarks/configs/cpu_draft.json
