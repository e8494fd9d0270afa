#!/usr/bin/env bash
# One command for a lent GPU (issue "GPU-grade engine"): CUDA exactness of the static-cache / CUDA-graph path and
# the speed goals, one line per goal, in under 5 minutes on an H100/H200. Installs nothing from the network:
# the GPU machine's torch + CUDA are used, with transformers from local wheels in .whl/ if any were carried
# (the device README explains how; transformers >= 5.17 is needed, 5.24 is what the CPU tests run).
# Results: $OUT/gpu_check.txt (one line per goal) and $OUT/{moe,dense}.jsonl (`moesd bench` records of the sweep).
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine
#   bash benchmarks/gpu_check.sh --smoke      # tiny models on the CPU: checks the script, not the GPU
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export OUT="${OUT:-$(mktemp -d)}"
exec "$PY" benchmarks/gpu_check.py --out "$OUT" "$@"
