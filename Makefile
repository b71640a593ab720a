# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-pgbouncer test-pg16 test-django61 toolkit-wheel toolkit-smoke serve serve-asgi bench lint format clean screenshots demo-reset

$(VENV)/.installed: pyproject.toml
	@echo "Installing Django, psycopg, PostgreSQL binaries and the test tools into $(VENV)/ (first time: about a minute)..."
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $@
	@echo "Installed."

install: $(VENV)/.installed  ## create .venv and install the project with its test tools

run: install  ## migrate, load demo data, serve on http://$(HOST):$(PORT) (make run PORT=8080 HOST=0.0.0.0)
	@echo "Starting PostgreSQL if needed and applying migrations (first time: about 20 s)..."
	$(PY) manage.py migrate --no-input
	@echo "Loading the demo data (first time: a few seconds)..."
	$(PY) manage.py seed_demo
	@echo "Serving on http://$(HOST):$(PORT)/  (Ctrl-C to stop; 'make stopdb' stops the embedded PostgreSQL)"
	$(PY) manage.py runserver $(HOST):$(PORT)

demo-reset: install  ## fresh demo data: empty the accounts' and orders' tables, then seed again (asks first)
	$(PY) manage.py seed_demo --reset

test: install  ## the whole suite against real PostgreSQL (embedded unless DATABASE_URL is set), browser group included
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests of transfers, orders, concurrency, retries, the backfill, the bulk writes (the import
# and its COPY path, the price raise and its run record) and the services' lock waits (a
# transaction-local lock_timeout must hold there too), again through a real PgBouncer in
# transaction mode (Debian's pgbouncer), plus the session-state checks; CI runs it.
PGBOUNCER_TESTS := tests/accounts/test_services.py tests/accounts/test_concurrency.py \
	tests/orders/test_services.py tests/orders/test_concurrency.py tests/dbops/test_retry.py \
	tests/dbops/test_backfill.py tests/dbops/test_pgbouncer.py tests/config/test_pgbouncer.py \
	tests/orders/test_imports.py tests/orders/test_bulk.py tests/dbops/test_transactions.py \
	tests/accounts/test_lock_waits.py tests/orders/test_lock_waits.py \
	tests/orders/test_bulk_lock_waits.py tests/orders/test_price_raise_runs.py
test-pgbouncer: install  ## those tests through PgBouncer (apt-get install pgbouncer)
	$(PY) -m pytest --pgbouncer $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

# The toolkit's tests on a third PostgreSQL major: 16, the binaries of the pgserver wheel (PyPI;
# linux x86_64), run by devdb as the embedded server in .pgdata-16/ (replica tests included).
# The binaries do not depend on the Python running them: fetched for CPython 3.11 on any Python.
PG16_WHEEL := pgserver==0.1.4
PG16_DIR := .pgbin/pgserver-0.1.4
PG16_ENV := EMBEDDED_PG_BIN_DIR=$(CURDIR)/$(PG16_DIR)/pgserver/pginstall/bin EMBEDDED_PG_DATA=$(CURDIR)/.pgdata-16
test-pg16: install  ## tests/dbops on PostgreSQL 16 from the pgserver wheel (about a minute)
	@[ -x $(PG16_DIR)/pgserver/pginstall/bin/pg_ctl ] || $(PY) -m pip install --quiet --no-deps \
		--target $(PG16_DIR) --only-binary=:all: --implementation cp --python-version 3.11 \
		--abi cp311 --platform manylinux2014_x86_64 $(PG16_WHEEL)
	$(PG16_ENV) $(PY) -m pytest --create-db tests/dbops $(PYTEST_ARGS); status=$$?; \
		$(PG16_ENV) $(PY) manage.py embedded_db stop >/dev/null; exit $$status

# The toolkit's tests on Django 6.1, which needs Python 3.12+ (PYTHON_NEXT): a venv of its own,
# the project's dependencies with Django 6.1 in place of 5.2, the project installed without them.
PYTHON_NEXT ?= python3.13
DJANGO_NEXT ?= django>=6.1,<6.2
VENV_NEXT := .venv-django-next
test-django61:  ## tests/dbops on Django 6.1 (PYTHON_NEXT=python3.12; needs Python 3.12+)
	rm -rf $(VENV_NEXT)
	$(PYTHON_NEXT) -m venv $(VENV_NEXT)
	$(VENV_NEXT)/bin/python -c 'import re, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
		print("\n".join(r for r in p["dependencies"] + p["optional-dependencies"]["dev"] \
		if not re.match(r"django\s*[<>=]", r)))' > $(VENV_NEXT)/requirements.txt
	$(VENV_NEXT)/bin/python -m pip install --quiet -r $(VENV_NEXT)/requirements.txt "$(DJANGO_NEXT)"
	$(VENV_NEXT)/bin/python -m pip install --quiet --no-deps -e .
	$(VENV_NEXT)/bin/python -c 'import django, sys; print("Django", django.get_version(), "on Python", sys.version.split()[0])'
	$(VENV_NEXT)/bin/python -m pytest --create-db tests/dbops $(PYTEST_ARGS)

# The toolkit's distributions, built from this repository (packaging/): django-dbops (dbops/ alone)
# and django-dbops-devdb (the embedded development server), into dist/.
toolkit-wheel: install  ## build the toolkit's wheels into dist/ (docs/dbops/installation.md)
	$(PY) packaging/build.py

# The wheels as a third party gets them: a fresh venv and `django-admin startproject` in a temporary
# directory outside this tree, dbops's migrations, checks, backfill, health and router run there.
# SMOKE_PYTHON: the fresh venv's Python (its newest Django the wheel allows is installed there).
SMOKE_PYTHON ?= $(PYTHON)
toolkit-smoke: install  ## build the wheels and run them in a fresh project (about 30 s; SMOKE_PYTHON=python3.13)
	$(PY) tests/toolkit_smoke/run.py --python $(SMOKE_PYTHON)

screenshots: install  ## the main pages at 1280 and 400 px, into docs/screenshots/ (needs chromium)
	$(PY) -m pytest -q tests/browser/screenshots.py

# /health/metrics adds up the workers' counters through files in PROMETHEUS_MULTIPROC_DIR
# (prometheus_client's multi-process mode): this directory, emptied at each start.
METRICS_DIR := $(CURDIR)/.prometheus-multiproc
serve: install  ## production settings under gunicorn (needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS)
	DJANGO_SETTINGS_MODULE=config.settings.production $(PY) manage.py collectstatic --no-input -v 0
	rm -rf "$(METRICS_DIR)" && mkdir -p "$(METRICS_DIR)"
	DJANGO_SETTINGS_MODULE=config.settings.production PROMETHEUS_MULTIPROC_DIR="$(METRICS_DIR)" \
		$(VENV)/bin/gunicorn config.wsgi -c config/gunicorn.py \
		--bind $(HOST):$(PORT) --workers $${WEB_CONCURRENCY:-2}

# ASGI: the async views run on the event loop. Django advises against persistent connections
# under ASGI (each request's queries run in a thread of its own), so the pool is on by default.
serve-asgi: install  ## production settings under uvicorn (needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS)
	DJANGO_SETTINGS_MODULE=config.settings.production $(PY) manage.py collectstatic --no-input -v 0
	DJANGO_SETTINGS_MODULE=config.settings.production DB_POOL=$${DB_POOL:-true} \
		$(VENV)/bin/uvicorn config.asgi:application --host $(HOST) --port $(PORT) \
		--workers $${WEB_CONCURRENCY:-2} --lifespan off

bench: install  ## run every benchmark (about 35 minutes); tables go to bench/results/
	$(PY) bench/connections.py
	$(PY) bench/transfers.py
	$(PY) bench/pages.py
	$(PY) bench/backfill.py
	$(PY) bench/index.py
	$(PY) bench/migrations.py
	$(PY) bench/partitioning.py
	$(PY) bench/replica.py
	$(PY) bench/async_views.py
	$(PY) bench/bulk.py

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stopdb: install  ## stop the embedded PostgreSQL
	$(PY) manage.py embedded_db stop
