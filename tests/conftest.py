import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def _empty_cache():
    """The cache outlives each test's database; start every test without yesterday's entries."""
    cache.clear()
    yield
    cache.clear()
