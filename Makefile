# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-pgbouncer serve serve-asgi bench lint format clean screenshots

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

test: install  ## the whole suite against real PostgreSQL (embedded unless DATABASE_URL is set), browser group included
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests of transfers, orders, concurrency, retries and the backfill, again through a real
# PgBouncer in transaction mode (Debian's pgbouncer), plus the session-state checks; CI runs it.
PGBOUNCER_TESTS := tests/accounts/test_services.py tests/accounts/test_concurrency.py \
	tests/orders/test_services.py tests/orders/test_concurrency.py tests/dbops/test_retry.py \
	tests/dbops/test_backfill.py tests/dbops/test_pgbouncer.py
test-pgbouncer: install  ## those tests through PgBouncer (apt-get install pgbouncer)
	$(PY) -m pytest --pgbouncer $(PGBOUNCER_TESTS) $(PYTEST_ARGS)

screenshots: install  ## the main pages at 1280 and 400 px, into docs/screenshots/ (needs chromium)
	$(PY) -m pytest -q tests/browser/screenshots.py

serve: install  ## production settings under gunicorn (needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS)
	DJANGO_SETTINGS_MODULE=config.settings.production $(PY) manage.py collectstatic --no-input -v 0
	DJANGO_SETTINGS_MODULE=config.settings.production $(VENV)/bin/gunicorn config.wsgi \
		--bind $(HOST):$(PORT) --workers $${WEB_CONCURRENCY:-2}

# ASGI: the async views run on the event loop. Django advises against persistent connections
# under ASGI (each request's queries run in a thread of its own), so the pool is on by default.
serve-asgi: install  ## production settings under uvicorn (needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS)
	DJANGO_SETTINGS_MODULE=config.settings.production $(PY) manage.py collectstatic --no-input -v 0
	DJANGO_SETTINGS_MODULE=config.settings.production DB_POOL=$${DB_POOL:-true} \
		$(VENV)/bin/uvicorn config.asgi:application --host $(HOST) --port $(PORT) \
		--workers $${WEB_CONCURRENCY:-2} --lifespan off

bench: install  ## run every benchmark (about 15 minutes); tables go to bench/results/
	$(PY) bench/connections.py
	$(PY) bench/transfers.py
	$(PY) bench/pages.py
	$(PY) bench/backfill.py
	$(PY) bench/index.py
	$(PY) bench/partitioning.py
	$(PY) bench/replica.py
	$(PY) bench/async_views.py

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stopdb: install  ## stop the embedded PostgreSQL
	$(PY) manage.py embedded_db stop
