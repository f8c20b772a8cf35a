# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: demo test install install-test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip wheel

# The pinned CPU build of torch goes in first: an unpinned torch (ours or a
# dependency's) would otherwise pull several GB of CUDA packages.
$(VENV)/.torch: $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH)
	touch $@

$(VENV)/.installed: $(VENV)/.torch setup.py
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/webdancer demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

$(VENV)/.installed-bench: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[bench]"
	touch $@

# Every benchmark, each writing bench_out/<name>.json (see benchmarks/README.md).
bench: $(VENV)/.installed-bench
	mkdir -p bench_out
	$(BIN)/python benchmarks/web_bench.py --out bench_out/web.json
	$(BIN)/python benchmarks/search_engines.py --out bench_out/search_engines.json
	$(BIN)/python benchmarks/env_bench.py --out bench_out/env.json
	$(BIN)/python benchmarks/rollout_bench.py --out bench_out/rollout.json
	$(BIN)/python benchmarks/sft_bench.py --out bench_out/sft.json
	$(BIN)/python benchmarks/rl_bench.py --out bench_out/rl.json
	$(BIN)/python benchmarks/logprob_memory.py --out bench_out/logprob_memory.json

clean:
	rm -rf $(VENV) runs outputs multirun
