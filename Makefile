# stepeval: `make eval` runs the offline demo; `make test` runs the tests. Both set themselves up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# `make eval` with no variables: the offline demo (bundled sample, control systems side by side, offline ASR, no judge)
DATASET ?= sample
MODEL ?= silence,noise,parrot,canned
JUDGE ?= none
ifeq ($(DATASET),sample)
ASR ?= whisper_base_offline
else
ASR ?= whisper_large_v3
endif
ARGS ?=
# CPU torch for the tests' tiny in-process models (a GPU machine installs its own build instead)
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup system-deps eval test test-fast lint format clean regress bench bench-e2e readme-demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH_SPEC)'
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps 'resemblyzer==0.1.4'
	touch $(STAMP)

setup: $(STAMP)

eval: $(STAMP)
	HF_HUB_DISABLE_TELEMETRY=1 $(BIN)/stepeval run --multirun dataset=$(DATASET) model=$(MODEL) asr=$(ASR) judge=$(JUDGE) $(ARGS)

# system packages the tests need (espeak-ng, chromium for the report and rating-page tests, CJK fonts): installed with apt-get where root, else the command is printed
system-deps:
	sh scripts/system_deps.sh '$(PYTHON)'

test: system-deps $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

# the fast loop: the tests marked `unit` (no model loads, servers or subprocesses; tests/conftest.py); pytest's last
# line gives the count and the time. `make test` runs these and all the others.
test-fast: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "unit and not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# regression gate: `make regress BASELINE=results/<stored run> CANDIDATE=results/<new run> [GATE="--metric name:threshold"]`
regress: $(STAMP)
	$(BIN)/stepeval compare --baseline $(BASELINE) --candidate $(CANDIDATE) $(GATE)

# replay throughput through the wire client against a local fixed-latency server (not part of `make test`):
# the suite of docs/performance.md (64 and 256 in flight, 8 turns of real audio history; medians of 3), or one setting:
#   make bench BENCH_ARGS="--conversations 256 --concurrency 128 --latency 0.5 --transport sdk"
BENCH_ARGS ?= --suite
bench: $(STAMP)
	$(BIN)/python scripts/bench_replay.py $(BENCH_ARGS)

# end to end (replay + real whisper base ASR + scorers, overlapped) on 40 conversations at 2 s per turn (docs/performance.md):
#   make bench-e2e E2E_ARGS="--sequential"
E2E_ARGS ?=
bench-e2e: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/bench_e2e.py $(E2E_ARGS)

# the README's demo table, regenerated from a real demo run (tests/test_pipeline.py checks it against a fresh one)
readme-demo: eval
	$(BIN)/python scripts/readme_demo.py results/sweeps/comparison.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
