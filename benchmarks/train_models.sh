#!/usr/bin/env bash
# The commands that produced the shipped weights in models/ (docs/results.md section 11), on the 2-core dev
# CPU with this interpreter's standard library (CPython 3.11.7) as the corpus. Each run checkpoints every
# 2 minutes into OUT/.checkpoint (not committed); after a kill, re-run the same line with --resume.
# The target and its draft ran side by side (2 threads + 1 thread); the distilled draft ran after them.
# Both first runs stopped at their time budget before the end of the schedule and were finished with
# --resume and a larger budget (the budget counts training time over all runs): target 48 -> 65 min,
# draft 15 -> 25 min. The weights do not depend on where a run was interrupted (tests/test_train.py).
set -euo pipefail
cd "$(dirname "$0")/.."
MOESD=.venv/bin/moesd
# Qwen3-MoE, 6 layers, hidden 256, E=32, K=4, BPE-4096 trained on the corpus (about 48 min).
$MOESD train target --out models/stdlib-moe-e32k4 --steps 1300 --budget-minutes 48 --threads 2 --eval-every 100 "$@"
# Dense 2-layer Qwen3 draft on the target's tokenizer (15 min).
$MOESD train draft --out models/stdlib-draft --tokenizer models/stdlib-moe-e32k4 --steps 1500 --budget-minutes 15 \
    --threads 1 --eval-every 250 "$@"
# Draft for SmolLM2-135M-Instruct over its 8,192 most frequent corpus tokens: teacher KL every 4th step,
# corpus cross-entropy between (ran alone, 2 threads).
$MOESD train distill --out models/smollm2-distilled-draft --teacher smollm2-135m-instruct --draft-vocab 8192 \
    --teacher-every 4 --batch-size 8 --steps 2000 --budget-minutes 28 --threads 2 --eval-every 500 --eval-batches 4 "$@"
