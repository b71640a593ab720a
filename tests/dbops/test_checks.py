import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from io import StringIO

import pytest
from django.core.management import call_command

from dbops.catalog import connection_limits
from dbops.checks import PoolSizing, check_pool_sizing
from devdb import embedded
from tests.helpers import ROOT, subprocess_env


@pytest.mark.django_db
def test_pool_check_warns_with_the_numbers_when_workers_exceed_the_server(settings):
    limits = connection_limits()
    settings.DBOPS = {**settings.DBOPS, "WEB_CONCURRENCY": limits.max_connections}
    [warning] = check_pool_sizing(databases=["default"])
    margin = max(3, limits.max_connections // 10)
    available = limits.max_connections - limits.superuser_reserved - limits.reserved - margin
    assert warning.id == "dbops.W001"
    assert (
        f"DBOPS['WEB_CONCURRENCY']={limits.max_connections} workers x 1 connections each"
        in warning.msg
    )
    assert f"more than the {available} the server can give" in warning.msg
    assert f"({limits.max_connections} max_connections" in warning.msg
    assert "max_size" in warning.hint


@pytest.mark.django_db
def test_pool_check_is_quiet_when_it_fits(settings):
    settings.DBOPS = {**settings.DBOPS, "WEB_CONCURRENCY": 2}
    assert check_pool_sizing(databases=["default"]) == []


def test_pool_check_runs_only_with_database_flag():
    assert check_pool_sizing(databases=None) == []


@pytest.mark.django_db
def test_manage_py_check_database_prints_the_warning(settings):
    settings.DBOPS = {**settings.DBOPS, "WEB_CONCURRENCY": 10_000}
    out = StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert "dbops.W001" in out.getvalue()


def test_pool_sizing_counts_the_pool_maximum_per_worker():
    sizing = PoolSizing(
        workers=8, per_worker=10, max_connections=100, superuser_reserved=3, reserved=0, margin=10
    )
    assert sizing.demand == 80 and sizing.available == 87 and sizing.fits
    assert not PoolSizing(
        workers=9, per_worker=10, max_connections=100, superuser_reserved=3, reserved=0, margin=10
    ).fits


def pool_check_output(server_url: str, **env: str) -> str:
    """``manage.py check --database default`` in its own process against ``server_url``."""
    done = subprocess.run(
        [sys.executable, "manage.py", "check", "--database", "default"],
        cwd=ROOT,
        env=subprocess_env(DATABASE_URL=server_url, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def pool_checks(server_url: str, cases: list[dict[str, str]]) -> list[str]:
    with ThreadPoolExecutor(len(cases)) as pool:
        return list(pool.map(lambda env: pool_check_output(server_url, **env), cases))


def test_pool_check_warns_from_the_first_connection_past_what_the_server_gives():
    """One throwaway server, started with two sets of limits. First 25 max_connections - 2
    superuser_reserved_connections - 4 reserved_connections - a margin of 3 (a tenth would be 2;
    the margin is at least 3) leaves 16 connections for the web workers; then 60 - 3 - 5 - 6 (a
    tenth) leaves 46."""
    small = {
        "max_connections": "25",
        "superuser_reserved_connections": "2",
        "reserved_connections": "4",
    }
    larger = {
        "max_connections": "60",
        "superuser_reserved_connections": "3",
        "reserved_connections": "5",
    }
    pool = {"DB_POOL": "true", "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "4"}
    with embedded.temporary_server(settings=small) as server:
        fits, over, pool_fits, pool_over = pool_checks(
            server.url(),
            [
                {"WEB_CONCURRENCY": "16"},
                {"WEB_CONCURRENCY": "17"},
                {"WEB_CONCURRENCY": "4", **pool},
                {"WEB_CONCURRENCY": "5", **pool},
            ],
        )
        embedded.stop(server.pgdata)
        embedded.start(server.pgdata, port=server.port, listen=server.listen, settings=larger)
        larger_fits, larger_over = pool_checks(
            server.url(), [{"WEB_CONCURRENCY": "46"}, {"WEB_CONCURRENCY": "47"}]
        )
    assert "dbops.W001" not in fits and "no issues" in fits, fits
    assert (
        "(dbops.W001) Database 'default': DBOPS['WEB_CONCURRENCY']=17 workers x 1 connections each = 17,"
        " more than the 16 the server can give (25 max_connections - 2 superuser_reserved_connections"
        " - 4 reserved_connections - 3 margin)."
    ) in over
    assert "dbops.W001" not in pool_fits, pool_fits
    assert (
        "DBOPS['WEB_CONCURRENCY']=5 workers x 4 connections each = 20, more than the 16 the server can give"
    ) in pool_over
    assert "dbops.W001" not in larger_fits, larger_fits
    assert (
        "= 47, more than the 46 the server can give (60 max_connections - 3"
        " superuser_reserved_connections - 5 reserved_connections - 6 margin)."
    ) in larger_over
