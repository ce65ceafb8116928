# The README's commands. Each target installs what it needs from nothing (a fresh clone).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo table1 test test-slow test-all lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build (any other spec pulls CUDA)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test/dev tools

demo: $(STAMP)  ## the whole method on the demo line, one seed (about 13 min on 2 cores)
	$(BIN)/mentoring line generate
	$(BIN)/mentoring experiment table1 --seeds 1
	@echo
	@echo "Table 1:   results/table1/table1.md (and .json); plots: results/table1/plots/"
	@echo "Per model: results/table1/work/seed_0/eval/<variant>/metrics.json and plots/"
	@echo "Models:    results/table1/work/seed_0/models/ (baseline.pt, <strategy>.pt)"
	@echo "Line:      data/manifests/line.parquet, preview results/line/plots/preview.png"

table1: $(STAMP)  ## the Table 1 experiment over 3 seeds (about 40 min on 2 cores)
	$(BIN)/mentoring line generate
	$(BIN)/mentoring experiment table1 --seeds 3 --workdir results/table1-3seeds/work --out results/table1-3seeds

test: $(STAMP)  ## fast test suite (everything but slow/gpu/browser tests)
	$(PY) -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: $(STAMP)  ## the long tests only
	$(PY) -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP)  ## every CPU test
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint + format check) and mypy
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: $(STAMP)  ## benchmarks: write JSON under benchmarks/results/
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/baseline_demo.py

clean:  ## remove generated data, models and results (keeps .venv)
	rm -rf data models results
