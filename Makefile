# The README's commands. Each target installs what it needs from nothing (a fresh clone).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install demo test test-slow test-all lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build (any other spec pulls CUDA)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test/dev tools

demo: $(STAMP)  ## generate the demo line, train and evaluate the baseline, print the results
	$(BIN)/mentoring line generate
	$(BIN)/mentoring train
	$(BIN)/mentoring evaluate
	@echo
	@echo "Results:  results/evaluate_baseline/metrics.json"
	@echo "Plots:    results/evaluate_baseline/plots/ (PR curves, predictions), results/line/plots/preview.png"
	@echo "Model:    models/baseline.pt"

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
