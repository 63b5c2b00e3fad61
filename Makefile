# Two commands a newcomer needs: `make run` (the service locally, no Azure account) and
# `make test` (lint, type-check, tests). Both install what they need on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

.PHONY: run test lint bench soak clean

$(PY_STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Azurite + Graph emulator + local Functions host on 127.0.0.1 (ports in README.md).
run: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m local.run

lint: $(PY_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: lint $(NODE_STAMP)
	$(VENV)/bin/pytest

bench: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m bench

# New seeds of the convergence property for SOAK_MINUTES (default 30), each printed.
SOAK_MINUTES ?= 30
soak: $(PY_STAMP) $(NODE_STAMP)
	CONVERGENCE_SOAK_MINUTES=$(SOAK_MINUTES) $(VENV)/bin/pytest -s -q -p no:cacheprovider \
		tests/reliability/test_convergence_stateful.py::test_soak

clean:
	rm -rf $(VENV) node_modules .azurite .mypy_cache .ruff_cache .pytest_cache
