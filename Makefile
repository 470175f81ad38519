# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip --disable-pip-version-check
# Tests mostly wait on real servers, sockets and fsyncs: two workers halve the wall time.
TEST_WORKERS ?= 2
LINT_PATHS := $(wildcard src tests bench scripts packaging)

.PHONY: run test lint typecheck unit bench dist lock clean

# The venv holds exactly the dev lock's tree, so it is made anew when the lock changes;
# the project itself goes on top (editable, no dependencies of its own choosing).
$(VENV)/.locked: requirements-dev.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r requirements-dev.lock
	touch $@

$(STAMP): $(VENV)/.locked pyproject.toml
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.bench: requirements-bench.lock $(STAMP)
	$(PIP) install --quiet --require-hashes -r requirements-bench.lock
	touch $@

## Run the relay in the foreground on its embedded (SQLite) storage.
run: $(STAMP)
	$(BIN)/cfylogs serve $(if $(CONFIG),--config $(CONFIG),)

## Everything CI checks: lint, types, the whole test suite.
test: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy
	scripts/ensure-test-tools.sh
	$(BIN)/pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check --fix $(LINT_PATHS)
	$(BIN)/ruff format $(LINT_PATHS)

bench: $(VENV)/.bench
	$(BIN)/python -m bench $(BENCH_ARGS)

## The offline install bundle: dist/cfylogs-<version>-cp<XY>-<platform>.tar.gz (see
## docs/OPERATIONS.md). PYTHON_VERSION=3.12 builds it for another CPython minor version,
## PLATFORM=manylinux_2_28_aarch64 for another glibc floor or machine. Only values given on
## the command line count: Python's container images export a PYTHON_VERSION of their own.
DIST_ARGS = $(if $(filter command line,$(origin PYTHON_VERSION)),--python-version $(PYTHON_VERSION)) \
	$(if $(filter command line,$(origin PLATFORM)),--platform $(PLATFORM))
dist: $(STAMP)
	$(BIN)/python scripts/build_dist.py $(DIST_ARGS)

# One resolution of every extra, then the smaller trees constrained to it, so that the three
# locks agree on every version. Universal (any platform, CPython 3.11 and newer) with the
# hashes of every file of each version: an offline bundle for any of those takes its wheels
# from requirements.lock. Versions already locked are kept: `make lock LOCK_ARGS=--upgrade`
# moves everything to the newest, `LOCK_ARGS='--upgrade-package NAME'` one package.
LOCK_FLAGS = --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command 'make lock' $(LOCK_ARGS)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras $(LOCK_FLAGS) -o requirements-bench.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev -c requirements-bench.lock $(LOCK_FLAGS) \
		-o requirements-dev.lock
	$(BIN)/uv pip compile pyproject.toml -c requirements-dev.lock $(LOCK_FLAGS) \
		-o requirements.lock
	$(BIN)/uv pip compile packaging/installer.in $(LOCK_FLAGS) -o requirements-installer.lock

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
