# The handful of targets people, hooks and CI all call.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install services lint typecheck test unit integration demo lowest schemas bench bench-micro clean

$(BIN)/email-worker: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/email-worker

services:
	@./scripts/services.sh

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

## The whole suite: lint, types, unit and integration tests against the real services.
test: install services lint typecheck
	$(BIN)/pytest -q

unit: install
	$(BIN)/pytest -q tests/unit

integration: install services
	$(BIN)/pytest -q -m integration

## Install, migrate and run the demo against the local RabbitMQ and Postgres.
demo: install services
	$(BIN)/email-worker migrate
	$(BIN)/email-worker demo

## The lowest versions pyproject.toml allows, in .venv-lowest: unit tests and the demo on them.
lowest: services
	PY=$(PY) ./scripts/lowest.sh

## The throughput benchmark (issue 4): see benchmarks/README.md (fast sink: apt-get install postfix).
bench: install services
	$(BIN)/python -m benchmarks --messages 20000 --rounds 3 --write-results

## Each hand-written hot-path part against its library (issue 14): benchmarks/micro/RESULTS.md.
bench-micro: install services
	$(BIN)/python -m benchmarks.micro --rounds 5 --write-results

schemas: install
	$(BIN)/python -m schemas

clean:
	rm -rf $(VENV) .venv-lowest .mypy_cache .ruff_cache .pytest_cache *.egg-info
