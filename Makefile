# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Tests mostly wait on real servers, sockets and fsyncs: two workers halve the wall time.
TEST_WORKERS ?= 2
LINT_PATHS := $(wildcard src tests bench scripts)

.PHONY: run test lint typecheck unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the relay in the foreground on its embedded (SQLite) storage.
run: $(STAMP)
	$(BIN)/cfylogs serve $(if $(CONFIG),--config $(CONFIG),)

## Everything CI checks: lint, types, the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	scripts/ensure-postgres.sh
	scripts/ensure-chromium.sh
	$(BIN)/pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
