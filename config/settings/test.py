"""Tests: real PostgreSQL (embedded or DATABASE_URL), fast hashing, no toolbar, N+1 is an error."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, databases
from .nplusone import *  # noqa: F403

DATABASES = databases(embedded=True)
# migrationsapp: a test-only app whose migrations run Django's operations and dbops' through
# manage.py migrate (tests/dbops/test_migration_guard.py, test_migrations_at_scale.py).
# dbops_testapp: the toolkit's own test models (tables keyed by an integer, a UUID and a
# composite primary key; parents and children) and pages: tests/dbops runs on it alone.
INSTALLED_APPS = [*INSTALLED_APPS, "devdb", "zeal", "tests.migrationsapp", "tests.dbops_testapp"]

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# N+1 DETECTION (django-zeal)
# ------------------------------------------------------------------------------
# An N+1 fails the test. Every test runs inside a zeal context (tests/conftest.py); the
# middleware gives each request its own, so two requests in one test are two units of work.
_FIRST = MIDDLEWARE.index("dbops.middleware.LivenessMiddleware") + 1
MIDDLEWARE = [*MIDDLEWARE[:_FIRST], "zeal.middleware.zeal_middleware", *MIDDLEWARE[_FIRST:]]
ZEAL_RAISE = True
