# One entry point for every workflow. `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# CI machines keep this CPU build of torch on disk; elsewhere pip downloads it like any other release.
TORCH_SPEC ?= torch==2.13.0
MODEL_DIR ?= models/tiny
MODEL ?=
OUT ?=
HOST ?= 127.0.0.1
PORT ?= 8000
# Two installs into the one venv: serving needs only the base dependencies (no torch, ~150 MB); exporting,
# testing and benchmarking add torch, transformers and the other extras (~1.5 GB). The full one covers serving.
STAMP := $(VENV)/.installed
SERVE_STAMP := $(VENV)/.installed-serve
TINY_DIR := models/tiny

.PHONY: install install-serve test test-fast lint format serve serve-ray export tiny bench bench-quick fuzz soak clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(SERVE_STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[export,test,bench,ray,openvino]"
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP)

install-serve: $(SERVE_STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Build the default model (the tiny random-weight one, which needs the full install) unless it is already there;
# any other folder must have been exported first.
$(MODEL_DIR)/export.json:
	@if [ "$(MODEL_DIR)" = "$(TINY_DIR)" ]; then $(MAKE) tiny MODEL_DIR=$(MODEL_DIR); else \
	  echo "$(MODEL_DIR) holds no export.json: export a checkpoint there first (make export MODEL=... OUT=$(MODEL_DIR))"; \
	  exit 2; fi

tiny: install
	$(PY) -m export.tiny --out checkpoints/tiny
	$(PY) -m export checkpoints/tiny --out $(MODEL_DIR) --dtype fp32 --dtype int8 --force

export: install
	@test -n "$(MODEL)" -a -n "$(OUT)" || (echo "usage: make export MODEL=<hub id or folder> OUT=models/<name>"; exit 2)
	$(PY) -m export $(MODEL) --out $(OUT) --dtype fp32 --dtype fp16 --dtype int8

# Serving installs only the base dependencies; `exec` leaves the server make's own child, so a SIGTERM it drains
# ends `make serve` with the server's exit status (0).
serve: install-serve $(MODEL_DIR)/export.json
	exec $(PY) -m runtime serve --functions functions --model microsoft-florence-2-large=$(MODEL_DIR) --host $(HOST) --port $(PORT) --reload

# The same server on a local Ray Serve cluster, REPLICAS model replicas (the ray extra, installed by `make install`).
REPLICAS ?= 2
serve-ray: install $(MODEL_DIR)/export.json
	$(PY) -m runtime serve --functions functions --model microsoft-florence-2-large=$(MODEL_DIR) --host $(HOST) --port $(PORT) --ray-replicas $(REPLICAS)

bench: install
	$(PY) -m bench

# A smoke run on the tiny model: its results go to build/bench-quick, not beside the kept ones in bench/results.
bench-quick: install
	$(PY) -m bench --quick --out build/bench-quick

# Schemathesis against /openapi.json: 2000 examples per operation on the fake engine, 500 on the tiny model
# (CI runs 500 and 100 as part of `make test`); then generation against transformers on 500 random requests (CI: 50).
fuzz: install
	FUZZ_EXAMPLES=2000 FUZZ_MODEL_EXAMPLES=500 $(PY) -m pytest -q -s -p no:cacheprovider tests/hardening/test_hardening_fuzz.py
	FUZZ_BEAM_CASES=500 $(PY) -m pytest -q -s -p no:cacheprovider tests/runtime/engine/test_engine_beam_fuzz.py

# The overload run at soak size: 100,000 requests on the fake engine, 3000 on the tiny model (CI: 5000 and 300).
soak: install
	OVERLOAD_REQUESTS=100000 OVERLOAD_MODEL_REQUESTS=3000 $(PY) -m pytest -q -s -p no:cacheprovider tests/hardening/test_hardening_overload.py

clean:
	rm -rf $(VENV) checkpoints build .pytest_cache .ruff_cache
