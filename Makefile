# One command each: `make run` serves the demo, `make test` runs every check.
# Both create .venv and install on first use; they need only Python 3.11+ and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Flask 2.x beside the venv's Flask 3, for tests/test_flask2.py: teams' apps still run the
# 2.x line, and the gateway must serve them. Put first on PYTHONPATH, it shadows Flask 3
# and Werkzeug 3; their own dependencies (Jinja2, itsdangerous, click, blinker,
# MarkupSafe) are the venv's, within what Flask 2.3 accepts.
FLASK2 := $(VENV)/flask2
FLASK2_STAMP := $(FLASK2)/.installed
# The oldest FastAPI and Starlette the gateway supports (pyproject.toml's lower bound),
# for tests/test_fastapi_old.py: the gateway imports Starlette itself, and must run on
# the team's. FastAPI 0.100's own dependencies (Pydantic 2, typing-extensions) are the
# venv's.
FASTAPI_OLD := $(VENV)/fastapi-old
FASTAPI_OLD_STAMP := $(FASTAPI_OLD)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: install run test lint typecheck unit tools browser screenshots bench clean

install: $(STAMP) $(FLASK2_STAMP) $(FASTAPI_OLD_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps 'httpbin==0.10.4'
	touch $(STAMP)

$(FLASK2_STAMP): $(STAMP)
	rm -rf $(FLASK2)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
	  --target $(FLASK2) 'flask>=2.3,<3' 'werkzeug>=2.3,<3'
	touch $(FLASK2_STAMP)

$(FASTAPI_OLD_STAMP): $(STAMP)
	rm -rf $(FASTAPI_OLD)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps \
	  --target $(FASTAPI_OLD) 'fastapi==0.100.*' 'starlette==0.27.*'
	touch $(FASTAPI_OLD_STAMP)

run: install
	$(BIN)/python -m legacy_flask.db
	$(BIN)/gateway serve --config routes.yaml --host $(HOST) --port $(PORT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy --strict gateway bench

# prometheus and promtool, for the tests of deploy/, redis-server, for the tests of
# the Redis store, and nginx, for the fidelity tests (Debian's packages when missing)
tools:
	deploy/prometheus/ensure-prometheus
	deploy/redis/ensure-redis-server
	deploy/nginx/ensure-nginx

# Debian's Chromium, for the page tests (Playwright drives it; it never downloads one)
browser:
	@test -x /usr/bin/chromium || { \
	  apt-get -o DPkg::Lock::Timeout=300 -qq update && \
	  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq install -y \
	    --no-install-recommends chromium; }

# The console's screenshots in docs/, taken anew by its page tests (see README)
screenshots: install browser
	CONSOLE_SCREENSHOTS=1 $(BIN)/pytest -q tests/test_console_page.py

unit: install tools browser
	$(BIN)/pytest

test: lint typecheck unit

# Gateway against the app alone, gunicorn and nginx, side by side: one table of ratios
# (instructions under callgrind, CPU per request, throughput). BENCH_QUICK=1 for a smoke
# run; docs/benchmarks.md explains the table and how far each measure can be trusted.
bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
