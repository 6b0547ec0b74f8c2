# recstream: `make help` lists every target.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup up down status run test test-unit test-integration lint format bench demo eval eval-fusion staging staging-smoke clean wheel-check

help: ## list every target
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[server,dev,eval]'
	touch $(STAMP)

setup: $(STAMP) ## venv + pip install -e '.[server,dev,eval]', redis-server, a C compiler and promtool (apt), Kafka jars (Maven)
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
	@command -v cc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc libc6-dev; }
	@command -v java >/dev/null || { apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless; }
	@command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven; }
	@command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus; }
	$(BIN)/recstream infra fetch

up: setup ## start Kafka + Redis and create the topics
	$(BIN)/recstream infra up
	$(BIN)/recstream topics create

down: ## stop the Kafka and Redis that `up` started
	@if [ -x $(BIN)/recstream ]; then $(BIN)/recstream infra down; else echo "not set up"; fi

status: ## say what runs and where: Kafka, Redis and every role process (ready, lag)
	$(BIN)/recstream status

run: up ## every role as its own process (infra/Procfile under honcho) until Ctrl-C
	$(BIN)/recstream run

test: setup ## all tests: unit, backend contract, and integration against the real Kafka and Redis
	$(BIN)/pytest -m "unit or contract or integration"

test-unit: setup ## pure-logic and backend-contract tests only, no services
	$(BIN)/pytest -m "(unit or contract) and not integration"

test-integration: setup ## tests against the real Kafka and Redis
	$(BIN)/pytest -m integration

lint: setup ## ruff (lint + format check), mypy, the layer contract (import-linter), the alert rules (promtool)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	promtool check rules infra/prometheus/alerts.yml
	cd infra/prometheus && promtool test rules alerts_test.yml

wheel-check: ## build the wheel; install it into fresh venvs as client and as server; import and run the CLI
	.ci/wheel-check

format: setup ## apply ruff's formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: up ## benchmarks (raw Kafka baseline, ingest, serving, filtered search, collaborative space, model training, recovery, lateness, Redis Cluster, topology); record results in docs/benchmarks.md
	$(BIN)/python bench/kafka_baseline.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/filters.py
	$(BIN)/python bench/collab.py
	$(BIN)/python bench/models.py
	$(BIN)/python bench/recovery.py --plot docs/benchmarks/recovery.png
	$(BIN)/python bench/lateness.py
	$(BIN)/python bench/cluster.py
	$(BIN)/python bench/topology.py --plot docs/benchmarks/topology.png

demo: up ## the main job on MovieLens: worker, catalog + ratings through Kafka, recommendations printed
	$(BIN)/recstream demo

staging: setup ## fault run: 3 secured brokers, Redis ACL user, Prometheus, roles as processes; load, faults, verdicts, report under reports/staging (docs/reliability.md)
	$(BIN)/recstream staging

staging-smoke: setup ## the short staging run (one of each fault, under a minute of load) that `make test` also runs
	$(BIN)/recstream staging --smoke

eval: up ## offline quality vs baselines on MovieLens + restaurants, with the live check (docs/evaluation.md)
	$(BIN)/recstream eval --live 20 --out reports/eval

eval-fusion: setup ## would a model beside the shipped ranking help? each baseline's lists fused with shipped's, weights picked on validation (~10 min)
	mkdir -p reports
	$(BIN)/python bench/fusion.py | tee reports/fusion.json

clean: down ## remove the venv and all local state (Kafka data, Redis AOF, Qdrant)
	rm -rf $(VENV) .state reports
