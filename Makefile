# Self-documenting: `make` (or `make help`) lists the targets with their `##` lines.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
HOST ?= 127.0.0.1
PREFECT_PORT ?= 4200

# Nothing leaves this machine: no Prefect telemetry, no analytics.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

$(PY):
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): $(PY) requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(INSTALLED)

.PHONY: help install run test lint format server clean

## Show this help
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-zA-Z_-]+:/{if(doc){split($$0,t,":"); printf "  \033[36m%-14s\033[0m %s\n", t[1], doc}; doc=""}' $(MAKEFILE_LIST)

## Create .venv and install every dependency (pinned)
install: $(INSTALLED)

## Train on the sample data end to end: embedded Prefect, local Dask cluster
run: install
	$(PY) main.py --mode all --reset

## Run the whole test suite (installs what it needs)
test: install
	$(PY) -m pytest

## Lint: ruff check and ruff format --check
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Format the code with ruff
format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Start a local Prefect server with its UI (SQLite in .prefect/, 127.0.0.1:4200)
server: install
	PREFECT_HOME=$(CURDIR)/.prefect $(VENV)/bin/prefect server start --host $(HOST) --port $(PREFECT_PORT) --analytics-off

## Remove the venv, the embedded Prefect database, sample data and published models
clean:
	rm -rf $(VENV) .prefect data/sample artifacts .pytest_cache .ruff_cache
