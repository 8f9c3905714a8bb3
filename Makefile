# Self-documenting: `make` (or `make help`) lists the targets with their `##` lines.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
BENCH_INSTALLED := $(VENV)/.bench-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
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

# Deployments (make deploy/worker/trigger) talk to the server of `make server` unless
# PREFECT_API_URL says otherwise; prefect.yaml reads the LINREG_* values at deploy time.
DEPLOY_ENV := PREFECT_API_URL=$${PREFECT_API_URL:-http://$(HOST):$(PREFECT_PORT)/api}
LINREG_WORK_POOL ?= linreg-process
LINREG_STEP_CRON ?= */10 * * * *
LINREG_DATA ?= $(CURDIR)/data/sample
LINREG_OUT_DIR ?= $(CURDIR)/artifacts
LINREG_STATE_BLOCK ?= linreg-state
LINREG_PROJECT_DIR ?= $(CURDIR)
export LINREG_WORK_POOL LINREG_STEP_CRON LINREG_DATA LINREG_OUT_DIR LINREG_STATE_BLOCK LINREG_PROJECT_DIR

.PHONY: help install run stop test browser lint format server worker deploy trigger serve-flows sample-data clean
.PHONY: serve bench-serve
.PHONY: bench bench-quick bench-tools
.PHONY: image image-tools postgres lint-tools

# Images (make image): tag, and where the debootstrapped base and other build inputs are kept.
IMAGE_TAG ?= dev
LINREG_CACHE ?= $(HOME)/.cache/linreg-build
export IMAGE_TAG LINREG_CACHE
# make server: empty = SQLite in .prefect/; a postgresql+asyncpg://user@host:5432/db URL =
# PostgreSQL, what Prefect advises for a server that several workers and users share.
PREFECT_DATABASE_URL ?=

# The prediction service (make serve): the model published in MODEL_DIR, on HOST:PORT.
PORT ?= 8000
MODEL_DIR ?= artifacts

## Show this help
help:
	@awk '/^## /{doc=substr($$0,4); next} /^[a-zA-Z_-]+:/{if(doc){split($$0,t,":"); printf "  \033[36m%-14s\033[0m %s\n", t[1], doc}; doc=""}' $(MAKEFILE_LIST)

## Create .venv and install every dependency (pinned)
install: $(INSTALLED)

## Train on the sample data end to end: a local Prefect server (kept running for the UI), Dask
run: install
	PREFECT_PORT=$(PREFECT_PORT) $(PY) main.py --mode server-start
	$(PY) main.py --mode all --reset

## Stop the local Prefect server that `make run` started
stop: install
	$(PY) main.py --mode server-stop

## Run the whole test suite (installs what it needs: Chromium, PostgreSQL, buildah, shellcheck)
test: install browser postgres image-tools lint-tools
	$(PY) -m pytest

## Install headless Chromium from Debian's packages for the UI test, if missing
browser:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends chromium; }

## Lint: ruff check and format --check, bandit, actionlint on the workflows, hadolint
lint: install lint-tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/bandit -q -r linreg tasks flows serving cli main.py
	$(VENV)/bin/actionlint -no-color
	$(VENV)/bin/hadolint --no-color Dockerfile

## Install shellcheck (Debian) if missing: actionlint checks the workflows' run: scripts with it
lint-tools:
	@command -v shellcheck >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends shellcheck; }

## Install PostgreSQL's server (Debian) if missing: the integration tests run Prefect on it
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

## Install buildah and debootstrap (Debian) if missing: make image builds without a docker daemon
image-tools:
	@{ command -v buildah && command -v debootstrap; } >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends buildah debootstrap; }

## Build linreg-serving:$(IMAGE_TAG) and linreg-training:$(IMAGE_TAG) (docker, else buildah)
image: install image-tools
	PYTHON=$(PY) deployments/image/build.sh serving training

## Format the code with ruff
format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Prefect server + UI on 127.0.0.1:4200: SQLite in .prefect/, or PostgreSQL at PREFECT_DATABASE_URL
server: install
	PREFECT_HOME=$(CURDIR)/.prefect \
		$(if $(PREFECT_DATABASE_URL),PREFECT_SERVER_DATABASE_CONNECTION_URL='$(PREFECT_DATABASE_URL)') \
		$(VENV)/bin/prefect server start --host $(HOST) --port $(PREFECT_PORT) --analytics-off

## Start a process worker on the linreg-process pool (creates the pool if missing)
worker: install
	$(DEPLOY_ENV) $(VENV)/bin/prefect work-pool inspect $(LINREG_WORK_POOL) >/dev/null 2>&1 || \
		$(DEPLOY_ENV) $(VENV)/bin/prefect work-pool create $(LINREG_WORK_POOL) --type process
	$(DEPLOY_ENV) $(VENV)/bin/prefect worker start --pool $(LINREG_WORK_POOL) --type process

## Deploy both flows from prefect.yaml (non-interactive; cron from LINREG_STEP_CRON)
deploy: install sample-data
	$(DEPLOY_ENV) $(VENV)/bin/prefect --no-prompt deploy --all
	$(DEPLOY_ENV) $(PY) -m tasks.crash_detection

## Trigger one train-step run on its deployment and wait for it (exit 1 if it fails)
trigger: install
	$(DEPLOY_ENV) $(VENV)/bin/prefect deployment run 'train-step/scheduled' --watch

## Serve both flows from one long-lived process (train-step on cron), no worker needed
serve-flows: install sample-data
	$(DEPLOY_ENV) $(PY) main.py --mode serve --cron "$(LINREG_STEP_CRON)" --out $(LINREG_OUT_DIR) \
		--state-block $(LINREG_STATE_BLOCK) --data $(LINREG_DATA)

## Serve the model in MODEL_DIR (artifacts) with gunicorn on HOST:PORT (127.0.0.1:8000)
serve: install
	HOST=$(HOST) PORT=$(PORT) MODEL_DIR=$(MODEL_DIR) \
		$(VENV)/bin/gunicorn -c serving/gunicorn.conf.py serving.wsgi:app

## Benchmark the service (1, 100, 10,000 rows) against FastAPI on uvicorn with wrk (installed if missing)
bench-serve: install
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y wrk; }
	$(PY) -m bench.serve

# The Spark MLlib baseline's needs, for the training bench only (make test never installs
# them): pyspark (pinned) in the venv, and a Java 17 runtime from Debian.
$(BENCH_INSTALLED): $(INSTALLED) requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_INSTALLED)

## Install the training bench's extras if missing: Java 17 (Debian) and pyspark (pinned)
bench-tools: install $(BENCH_INSTALLED)
	@command -v java >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless; }

## Benchmark training at 1M rows, 3 runs each (under 5 min): table to stdout and bench/results/
bench-quick: install bench-tools
	$(PY) -m bench.run --profile quick

## Benchmark training at 1M, 10M, 30M rows against dask-ml, sklearn, Spark MLlib and the I/O limit
bench: install bench-tools
	$(PY) -m bench.run --profile full

## Write the sample data set (data/sample) if it is missing
sample-data: install
	@ls data/sample/*.parquet >/dev/null 2>&1 || $(PY) -m linreg.synthetic --out data/sample

## Remove the venv, the embedded Prefect database, sample data and published models
clean:
	rm -rf $(VENV) .prefect data/sample artifacts .pytest_cache .ruff_cache
