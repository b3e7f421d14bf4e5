# Two commands on a fresh machine: `make demo` and `make test`.
# Each bootstraps what it needs (virtualenv, the package in editable mode, the
# FerretDB binary, Prometheus and Chromium), idempotently.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help setup ferretdb helm kube system-deps demo test lint format bench bench-quick clean dashboards dashboards-check

help:
	@echo "make demo    run the main job (embedded MongoDB-compatible server + LocalCluster)"
	@echo "make test    run the whole test suite"
	@echo "make lint    ruff check + format check + import layers (lint-imports)"
	@echo "make bench   run every benchmark (benchmarks/*.py)"
	@echo "make dashboards        regenerate dashboards/ (Grafana JSON + provisioning)"
	@echo "make dashboards-check  evaluate every panel's PromQL against a real Prometheus"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

# Builds FerretDB with Go into ~/.cache/lepton-dask/bin (kept across clones).
ferretdb: $(STAMP)
	@$(BIN)/lepton-dask mongo install >/dev/null

# Binaries built with Go (FerretDB, helm, the API server) live here, kept
# across clones.
CACHE_BIN := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/lepton-dask/bin

# Helm, built with Go from helm.sh/helm/v4 into the same cache (for the
# chart's tests: helm lint and helm template).
HELM_VERSION ?= v4.3.2
HELM := $(CACHE_BIN)/helm-$(HELM_VERSION)
$(HELM):
	@./.ci/build-helm $(HELM_VERSION) $@
helm: $(HELM)

# A real Kubernetes API server and etcd, built with Go from the wrapper
# modules in .ci/kube into the same cache (for tests/kube). Cold: ~11 min.
kube:
	@./.ci/build-kube $(CACHE_BIN)

# Debian packages used by the tests: a real Prometheus and a headless Chromium.
system-deps:
	@./.ci/system-deps

setup: $(STAMP) ferretdb helm kube system-deps

demo: setup
	$(BIN)/lepton-dask demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

dashboards: $(STAMP)
	$(BIN)/lepton-dask dashboards write --dir dashboards

# Also part of `make test`: a real Prometheus scrapes a scheduler running work
# under the scaler, and every panel's query must return data.
dashboards-check: setup
	$(BIN)/lepton-dask dashboards check --dir dashboards
	$(BIN)/python -m pytest tests/dashboard $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check lepton_dask tests benchmarks
	$(BIN)/ruff format --check lepton_dask tests benchmarks
	$(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff format lepton_dask tests benchmarks
	$(BIN)/ruff check --fix lepton_dask tests benchmarks

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

bench-quick: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
