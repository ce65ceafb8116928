# The README's commands. Each target installs what it needs from nothing (a fresh clone).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
# stage commands (`mentoring ...`) run from the venv
DVC := PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install chromium demo table1 experiments test test-gpu bench-gpu test-slow test-all lint format bench image-test clean

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build (any other spec pulls CUDA)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its test/dev tools

# The browser tests (tests/e2e) and benchmarks/annotate.py drive Debian's Chromium, never a
# downloaded one: installed here when it is missing and we are root; otherwise they skip, saying why
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
chromium:  ## Debian's chromium for the browser tests (installed when missing, as root)
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 && command -v apt-get >/dev/null \
	  && { $(APT_CHROMIUM) 2>&1 || { apt-get update -qq && $(APT_CHROMIUM); }; }; } \
	  || echo "make: no $(CHROMIUM) (needs root and apt-get): the browser tests will skip"

demo: $(STAMP)  ## the whole pipeline with `dvc repro` on the demo line, tracked in MLflow (~15 min)
	@test -d .git || git init -q
	@test -f .dvc/config || $(BIN)/dvc init -q
	$(DVC) repro
	@echo
	@cat results/report/table1.md
	@echo
	@$(BIN)/mentoring registry list
	@echo
	@echo "Pipeline:  dvc.yaml (dvc dag), params in params.yaml; again with nothing changed: dvc repro"
	@echo "Table 1:   results/report/table1.md (and .json), plots in results/report/plots/"
	@echo "Per model: results/evaluate/<strategy>/metrics.json and plots/, models in models/"
	@echo "Registry:  results/register/decision.json; mentoring registry list | promote | rollback"
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db  (http://127.0.0.1:5000)"
	@echo "Plots:     $(BIN)/dvc plots show  (writes dvc_plots/index.html); metrics: dvc metrics show"

SEEDS ?= 3
EXP = $(BIN)/mentoring experiment
EXP_WORK = --seeds $(SEEDS) --workdir results/experiments/work

table1: $(STAMP)  ## Table 1 (both levels, every row) + the leads, over 3 seeds, into docs/results/ (hours on 2 cores)
	$(BIN)/mentoring line generate
	$(EXP) table1 $(EXP_WORK) --rows experiments/table1.yaml --round2 transfer+omnia --out docs/results
	$(EXP) rows experiments/leads.yaml $(EXP_WORK) --out docs/results/leads \
	  --title "Leads against the forgetting of w/ new data"

experiments: table1  ## table1, then multi-round, label efficiency and epoch budget into docs/results/
	$(EXP) rounds --rounds 3 $(EXP_WORK) --out docs/results/rounds
	$(EXP) budget --strategy scratch --epochs 8,16,32,64 $(EXP_WORK) --out docs/results/budget
	$(EXP) efficiency --budgets 100,300,600 $(EXP_WORK) --out docs/results/efficiency

test: $(STAMP) chromium  ## fast test suite (everything but slow/gpu/labelstudio tests)
	$(PY) -m pytest -m "not slow and not gpu and not labelstudio" $(PYTEST_ARGS)

test-gpu: $(STAMP)  ## the CUDA tests (tests/gpu): skipped with the reason where torch sees no GPU
	$(PY) -m pytest -m gpu -rs tests/gpu $(PYTEST_ARGS)

test-slow: $(STAMP) chromium  ## the long tests only
	$(PY) -m pytest -m "slow and not gpu" $(PYTEST_ARGS)

test-all: $(STAMP) chromium  ## every CPU test
	$(PY) -m pytest -m "not gpu" $(PYTEST_ARGS)

lint: $(STAMP)  ## ruff (lint + format check), mypy and hadolint
	$(BIN)/ruff check src tests benchmarks components pipelines
	$(BIN)/ruff format --check src tests benchmarks components pipelines
	$(BIN)/mypy
	$(BIN)/hadolint docker/Dockerfile docker/Dockerfile.cuda

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format src tests benchmarks components pipelines
	$(BIN)/ruff check --fix src tests benchmarks components pipelines

bench: $(STAMP) chromium  ## benchmarks: write JSON under benchmarks/results/
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/baseline_demo.py
	$(PY) benchmarks/tracking.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/annotate.py
	$(PY) benchmarks/serving.py
	$(PY) benchmarks/mining.py
	$(PY) benchmarks/pipeline.py

bench-gpu: $(STAMP)  ## the GPU benchmark (a CUDA node): training bf16/fp32, mining, peak fraction
	$(PY) benchmarks/gpu.py $(BENCH_ARGS)

.PHONY: annotate
annotate: $(STAMP)  ## the mentoring web interface on the demo's mining output (http://127.0.0.1:8000/)
	$(BIN)/mentoring annotate serve --tasks data/mining/tasks.json

image-test: $(STAMP)  ## build the CPU image with podman and run a component's command in it
	bash docker/image-test.sh

clean:  ## remove generated data, models, results and the MLflow store (keeps .venv, data/feedback)
	rm -rf data/line data/manifests data/mining data/mentor models results mlflow.db mlartifacts dvc_plots

# Label Studio lives in its own venv: about 1 GB of a Django application's pinned dependencies,
# kept out of the project's; the round-trip test starts it as a real server on loopback
# (docs/labelstudio.md)
LS_PYTHON ?= python3.11
LS_VENV ?= .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed

.PHONY: labelstudio-venv test-labelstudio

$(LS_STAMP):
	@test -x $(LS_VENV)/bin/python || $(LS_PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --upgrade pip
	# label-studio pins its SDK (1.23.2: label-studio-sdk 2.1.2)
	$(LS_VENV)/bin/python -m pip install --quiet 'label-studio==1.23.*' label-studio-sdk
	@touch $(LS_STAMP)

labelstudio-venv: $(LS_STAMP)  ## the Label Studio server in .venv-labelstudio (~1 GB, ~2 min)

test-labelstudio: $(STAMP) $(LS_STAMP)  ## the Label Studio round trip against a real server
	$(PY) -m pytest -m labelstudio $(PYTEST_ARGS)
