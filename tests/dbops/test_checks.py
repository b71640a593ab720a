from io import StringIO

import pytest
from django.core.management import call_command

from dbops.catalog import connection_limits
from dbops.checks import PoolSizing, check_pool_sizing


@pytest.mark.django_db
def test_pool_check_warns_with_the_numbers_when_workers_exceed_the_server(settings):
    limits = connection_limits()
    settings.WEB_CONCURRENCY = limits.max_connections
    [warning] = check_pool_sizing(databases=["default"])
    margin = max(3, limits.max_connections // 10)
    available = limits.max_connections - limits.superuser_reserved - limits.reserved - margin
    assert warning.id == "dbops.W001"
    assert f"WEB_CONCURRENCY={limits.max_connections} workers x 1 connections each" in warning.msg
    assert f"more than the {available} the server can give" in warning.msg
    assert f"({limits.max_connections} max_connections" in warning.msg
    assert "DB_POOL_MAX_SIZE" in warning.hint


@pytest.mark.django_db
def test_pool_check_is_quiet_when_it_fits(settings):
    settings.WEB_CONCURRENCY = 2
    assert check_pool_sizing(databases=["default"]) == []


def test_pool_check_runs_only_with_database_flag():
    assert check_pool_sizing(databases=None) == []


@pytest.mark.django_db
def test_manage_py_check_database_prints_the_warning(settings):
    settings.WEB_CONCURRENCY = 10_000
    out = StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert "dbops.W001" in out.getvalue()


def test_pool_sizing_counts_the_pool_maximum_per_worker():
    sizing = PoolSizing(workers=8, per_worker=10, max_connections=100, reserved=3, margin=10)
    assert sizing.demand == 80 and sizing.available == 87 and sizing.fits
    assert not PoolSizing(workers=9, per_worker=10, max_connections=100, reserved=3, margin=10).fits
