import pytest
from django.core.cache import cache
from zeal import zeal_context


@pytest.fixture(autouse=True)
def _empty_cache():
    """The cache outlives each test's database; start every test without yesterday's entries."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _strict_loading():
    """Every test is a unit of work for django-zeal: a relation or deferred column loaded per row,
    or the same ``.get()`` in a loop, raises NPlusOneError (settings: config/settings/nplusone.py).
    Requests get their own scope from the middleware, threads from ``tests.helpers.in_threads``."""
    with zeal_context():
        yield
