# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps
# what it needs, idempotently, and prints the time of each step.
#   make demo: a virtualenv with the package and what the demo plots with
#     (.[plots]), and the embedded server (FerretDB, built with Go), side by side.
#   make test: everything the tests run against besides: the development extras
#     (.[dev]), helm, a Kubernetes API server and etcd, and Debian packages
#     (Prometheus, Alertmanager, Chromium, SLURM).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BASE_STAMP := $(VENV)/.installed-plots
DEV_STAMP := $(VENV)/.installed-dev
TIMED := ./.ci/timed
PYTEST_ARGS ?=

.PHONY: help venv venv-dev setup ferretdb ferretdb-if-needed helm kube system-deps demo test lint format bench bench-quick clean dashboards dashboards-check

help:
	@echo "make demo    run the main job (embedded MongoDB-compatible server + LocalCluster)"
	@echo "make test    run the whole test suite"
	@echo "make lint    ruff check + format check + import layers (lint-imports)"
	@echo "make bench   run every benchmark (benchmarks/*.py)"
	@echo "make dashboards        regenerate dashboards/ (Grafana JSON + provisioning)"
	@echo "make dashboards-check  evaluate every panel's PromQL against a real Prometheus"

# The package in editable mode with the plots extra: all `make demo` needs.
$(BASE_STAMP): pyproject.toml
	@$(TIMED) "virtualenv + pip install -e '.[plots]'" bash -c '\
	  set -e; test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	  $(BIN)/python -m pip install --progress-bar off -e ".[plots]"'
	@touch $@
venv: $(BASE_STAMP)

# The test suite's tools and the packages it tests against (.[dev]).
$(DEV_STAMP): $(BASE_STAMP)
	@$(TIMED) "pip install -e '.[dev]'" \
	  $(BIN)/python -m pip install --progress-bar off -e '.[dev]'
	@touch $@
venv-dev: $(DEV_STAMP)

# FerretDB, built with Go into ~/.cache/lepton-dask/bin (kept across clones),
# each package listed as it compiles. Needs only python3 and Go, not the
# virtualenv, so that `make demo` builds it beside the pip install.
ferretdb:
	@$(TIMED) "FerretDB (lepton-dask mongo install)" $(PYTHON) lepton_dask/store/_install.py
# The demo's: none when LEPTON_MONGO_URI is set or mongod is on PATH.
ferretdb-if-needed:
	@$(TIMED) "FerretDB (lepton-dask mongo install)" \
	  $(PYTHON) lepton_dask/store/_install.py --if-needed

# Binaries built with Go (FerretDB, helm, the API server) live here, kept
# across clones.
CACHE_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lepton-dask/bin

# Helm, built with Go from helm.sh/helm/v4 into the same cache (for the
# chart's tests: helm lint and helm template).
HELM_VERSION ?= v4.3.2
HELM := $(CACHE_BIN)/helm-$(HELM_VERSION)
$(HELM):
	@$(TIMED) "helm $(HELM_VERSION)" ./.ci/build-helm $(HELM_VERSION) $@
helm: $(HELM)

# A real Kubernetes API server and etcd, built with Go from the wrapper
# modules in .ci/kube into the same cache (for tests/kube). Cold: ~11 min.
kube:
	@$(TIMED) "kube-apiserver + etcd" ./.ci/build-kube $(CACHE_BIN)

# Debian packages used by the tests: a real Prometheus and a headless Chromium.
system-deps:
	@$(TIMED) "Debian packages (system-deps)" ./.ci/system-deps

setup: $(DEV_STAMP) ferretdb helm kube system-deps

# The virtualenv and FerretDB build side by side (-j2, their progress lines
# interleaved as they come); then the demo.
demo:
	@$(TIMED) "make demo: build (virtualenv and FerretDB side by side)" \
	  $(MAKE) --no-print-directory -j2 venv ferretdb-if-needed
	@$(TIMED) "make demo: lepton-dask demo" $(BIN)/lepton-dask demo

test: setup
	@$(TIMED) "pytest" $(BIN)/python -m pytest $(PYTEST_ARGS)

dashboards: $(DEV_STAMP)
	$(BIN)/lepton-dask dashboards write --dir dashboards

# Also part of `make test`: a real Prometheus scrapes a scheduler running work
# under the scaler, and every panel's query must return data.
dashboards-check: setup
	$(BIN)/lepton-dask dashboards check --dir dashboards
	$(BIN)/python -m pytest tests/dashboard $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(BIN)/ruff check lepton_dask tests benchmarks
	$(BIN)/ruff format --check lepton_dask tests benchmarks
	$(BIN)/lint-imports --no-cache

format: $(DEV_STAMP)
	$(BIN)/ruff format lepton_dask tests benchmarks
	$(BIN)/ruff check --fix lepton_dask tests benchmarks

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

bench-quick: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
