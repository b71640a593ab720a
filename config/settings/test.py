"""Tests: real PostgreSQL (embedded or DATABASE_URL), fast hashing, no toolbar, N+1 is an error."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, databases
from .nplusone import *  # noqa: F403

DATABASES = databases(embedded=True)
# The toolkit's own test models (tests/dbops_testapp): tables keyed by an integer, a UUID and a
# composite primary key.
INSTALLED_APPS = [*INSTALLED_APPS, "devdb", "zeal", "tests.dbops_testapp"]

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# N+1 DETECTION (django-zeal)
# ------------------------------------------------------------------------------
# An N+1 fails the test. Every test runs inside a zeal context (tests/conftest.py); the
# middleware gives each request its own, so two requests in one test are two units of work.
MIDDLEWARE = [MIDDLEWARE[0], "zeal.middleware.zeal_middleware", *MIDDLEWARE[1:]]
ZEAL_RAISE = True
