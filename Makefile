# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test serve bench lint format clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project with its test tools

run: install  ## migrate, load demo data, serve on http://127.0.0.1:8000 with the debug toolbar
	$(PY) manage.py migrate --no-input
	$(PY) manage.py seed_demo
	@echo "Serving on http://$(HOST):$(PORT)/  (Ctrl-C to stop; 'make stopdb' stops the embedded PostgreSQL)"
	$(PY) manage.py runserver $(HOST):$(PORT)

test: install  ## run the whole suite against real PostgreSQL (embedded unless DATABASE_URL is set)
	$(PY) -m pytest $(PYTEST_ARGS)

serve: install  ## production settings under gunicorn (needs DJANGO_SECRET_KEY and DJANGO_ALLOWED_HOSTS)
	DJANGO_SETTINGS_MODULE=config.settings.production $(PY) manage.py collectstatic --no-input -v 0
	DJANGO_SETTINGS_MODULE=config.settings.production $(VENV)/bin/gunicorn config.wsgi \
		--bind $(HOST):$(PORT) --workers $${WEB_CONCURRENCY:-2}

bench: install  ## run every benchmark (about 15 minutes); tables go to bench/results/
	$(PY) bench/connections.py
	$(PY) bench/transfers.py
	$(PY) bench/pages.py
	$(PY) bench/backfill.py
	$(PY) bench/index.py

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

stopdb: install  ## stop the embedded PostgreSQL
	$(PY) manage.py embedded_db stop
