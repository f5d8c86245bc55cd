# Runstream's three commands. Each sets itself up from a fresh clone.
#   make dev      the whole stack on an embedded Postgres: http://127.0.0.1:8000/
#   make test     set up and pass the tests (needs Postgres, Redis and RabbitMQ on loopback, and Node)
#   make install  the virtualenv at .venv/ with the project and its dev extras
#   make lint     ruff (rules and formatting) over the tree, mypy over the package
#   make dist     the wheel and sdist in dist/, checked by twine

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Rebuilt only when the dependencies change: a second `make install` is instant.
INSTALLED := $(VENV)/.installed

.PHONY: install dev test lint dist bench chromium pgbouncer node

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

dev: install
	$(BIN)/runstream dev

# The browser tests drive Debian's Chromium (Playwright's own browser download
# cannot work offline and is not needed).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The PgBouncer tests start Debian's pgbouncer on a free port (transaction pooling).
pgbouncer:
	@test -x /usr/sbin/pgbouncer || { \
		echo "installing Debian's pgbouncer for the PgBouncer tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }

# The DeltaKit client test runs DeltaKit's React code under Node: npm ci installs
# react, react-test-renderer and esbuild from the lockfile, again only when it changes.
DELTAKIT_CLIENT := tests/deltakit
NODE_INSTALLED := $(DELTAKIT_CLIENT)/node_modules/.package-lock.json

node:
	@command -v npm >/dev/null 2>&1 || { \
		echo "installing Debian's nodejs and npm for the DeltaKit client test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }

$(NODE_INSTALLED): $(DELTAKIT_CLIENT)/package-lock.json | node
	npm ci --prefix $(DELTAKIT_CLIENT) --no-audit --no-fund --loglevel=error
	touch $@

test: install chromium pgbouncer $(NODE_INSTALLED)
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/typecheck.py

dist: install
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

# The bench creates (and drops) its own database on this server; like the tests
# it defaults to the loopback services.
BENCH_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

bench: install
	DATABASE_URL="$${DATABASE_URL:-$(BENCH_DATABASE_URL)}" $(BIN)/runstream bench --plot bench/results.png
