# Two commands a newcomer needs: `make run` (the service locally, no Azure account) and
# `make test` (lint, type-check, tests). Both install what they need on first use.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PY_STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
# The console's browser tests drive the distribution's Chromium (Playwright never downloads
# a browser): the file itself is the stamp, so it is installed only when missing.
CHROMIUM := /usr/bin/chromium
# The mutation-testing tool lives in a virtualenv of its own: none of it is needed to run
# or test the app, and it runs the tests with .venv's interpreter.
MUTATE_VENV := .venv-mutate
MUTATE_STAMP := $(MUTATE_VENV)/.installed

.PHONY: run test lint screenshots bench bench-timers bench-scale soak mutate lock check-lock clean

$(PY_STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	@touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(CHROMIUM):
	@echo "Installing Chromium for the console's browser tests (apt-get)"
	if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Azurite + Graph emulator + local Functions host on 127.0.0.1 (ports in README.md).
run: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m local.run

lint: $(PY_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Two worker processes (pytest-xdist): the suite waits more than it computes; `worksteal`
# lets the worker done first take over the other's remaining tests.
test: lint $(NODE_STAMP) $(CHROMIUM)
	$(VENV)/bin/pytest -n 2 --dist worksteal

# The console's screenshots in docs/console/, taken by its browser test.
screenshots: $(PY_STAMP) $(NODE_STAMP) $(CHROMIUM)
	CONSOLE_SCREENSHOTS=docs $(VENV)/bin/pytest -q -p no:cacheprovider \
		tests/console/test_console_browser.py::test_an_administrator_connects_watches_and_disconnects_a_room

bench: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m bench

# The timers at tenant scale: 1,000 resources' fan-out and renewals, a round with 10% failing.
bench-timers: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m bench.timers --before

# The whole stack at tenant scale (minutes): 1,000 connected resources' idle reconcile
# round, upkeep and 200 notifications/s for 60 s. SCALE_ARGS shrinks it, e.g.
# SCALE_ARGS="--resources 100 --duration 15".
bench-scale: $(PY_STAMP) $(NODE_STAMP)
	$(PY) -m bench.scale $(SCALE_ARGS)

# New seeds of the convergence property for SOAK_MINUTES (default 30), each printed.
SOAK_MINUTES ?= 30
soak: $(PY_STAMP) $(NODE_STAMP)
	CONVERGENCE_SOAK_MINUTES=$(SOAK_MINUTES) $(VENV)/bin/pytest -s -q -p no:cacheprovider \
		tests/reliability/test_convergence_stateful.py::test_soak

# The locks: requirements.txt (what Azure installs) from requirements.in, and
# requirements-dev.txt from requirements-dev.in on top of it; exact versions and hashes for
# Python 3.11 on any platform. Versions already locked are kept unless the .in files need
# others (`UPGRADE=--upgrade make lock` moves everything to the newest allowed).
# --no-strip-extras: pip in --require-hashes mode refuses a dependency asking for
# `httpx[http2]` unless the lock pins it with that extra (it looks for a newer httpx).
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --generate-hashes --universal --python-version 3.11 --no-header --no-strip-extras $(UPGRADE)
lock: $(PY_STAMP)
	$(UV_COMPILE) requirements.in -o requirements.txt
	$(UV_COMPILE) requirements-dev.in -o requirements-dev.txt

# The lock alone, in a new venv, with only the files .funcignore ships: the app must index
# and build its clients. Needs the package registry; not part of `make test`.
CHECK_DIR := $(or $(TMPDIR),/tmp)/booking-sync-check-lock
check-lock: $(PY_STAMP)
	rm -rf $(CHECK_DIR) && $(PYTHON) -m venv $(CHECK_DIR)/venv
	$(CHECK_DIR)/venv/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.txt
	$(PY) -m bench.package --stage $(CHECK_DIR)/app
	$(CHECK_DIR)/venv/bin/python bench/package.py --check $(CHECK_DIR)/app

$(MUTATE_STAMP): mutation/requirements.txt
	test -x $(MUTATE_VENV)/bin/python || $(PYTHON) -m venv $(MUTATE_VENV)
	$(MUTATE_VENV)/bin/pip install --quiet --disable-pip-version-check -r mutation/requirements.txt
	@touch $@

# Mutation testing of the core modules against the fast unit tests (not part of `make
# test`; minutes per module). MUTATE_ARGS: module names, --budget-minutes N.
# Results and how to read them: docs/mutation-testing.md.
mutate: $(PY_STAMP) $(MUTATE_STAMP)
	nice -n 15 $(MUTATE_VENV)/bin/python -m mutation $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) $(MUTATE_VENV) .mutate node_modules .azurite .mypy_cache .ruff_cache .pytest_cache
