import re

import pytest
from django.core.cache import cache
from django.db import connection
from zeal import zeal_context


def pytest_configure(config):
    """Every warning of a Django feature to be removed is an error: on Django 5.2,
    RemovedInDjango60Warning and RemovedInDjango61Warning; on 6.x, those of 7.x. Added here, not in
    pyproject.toml, because each Django version defines only its own classes."""
    from django.utils import deprecation

    for name in sorted(vars(deprecation)):
        if re.fullmatch(r"RemovedInDjango\d+Warning", name):
            config.addinivalue_line("filterwarnings", f"error::django.utils.deprecation.{name}")


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


@pytest.fixture(scope="session")
def replica_server(django_db_setup, django_db_blocker):
    """A streaming hot standby of the embedded primary the suite runs on, for the whole session
    (built with pg_basebackup in a few seconds). Needs the embedded server: a replica of a server
    named by DATABASE_URL is not this suite's to build."""
    import os

    from django.conf import settings

    from devdb import embedded

    if os.environ.get("DATABASE_URL"):
        pytest.skip(
            "replica tests build a standby of the embedded PostgreSQL; DATABASE_URL names a server "
            "this suite does not own (run them with DATABASE_URL unset)"
        )
    primary = embedded.status(settings.EMBEDDED_PGDATA)
    assert primary is not None, "the embedded primary is not running"
    # One a developer started (embedded_db start --replica) is used, and left running.
    started_here = embedded.status(embedded.replica_pgdata(primary.pgdata)) is None
    standby = embedded.replica_start(primary)
    yield standby
    if started_here:
        embedded.replica_stop(settings.EMBEDDED_PGDATA)


@pytest.fixture(scope="module")
def replica_alias(replica_server):
    """The ``replica`` alias on the standby (so the router is on) for one test module. Module
    scope, so it exists before each test's database setup: mark the tests
    ``django_db(transaction=True, databases=["default", "replica"])``."""
    from django.db import connections

    from dbops import routing

    connections.settings[routing.replica_alias()] = {
        **connections["default"].settings_dict,
        "HOST": str(replica_server.socket_dir),
        "PORT": str(replica_server.port),
        # Not flushed between tests: a standby is read-only and gets the primary's flush.
        "TEST": {**connections["default"].settings_dict["TEST"], "MIRROR": "default"},
    }
    try:
        yield replica_server
    finally:
        connections[routing.replica_alias()].close()
        del connections[routing.replica_alias()]
        del connections.settings[routing.replica_alias()]
        routing.monitor.reset()


@pytest.fixture
def replica(replica_alias):
    """The standby, replay running and caught up with the primary, the router's memory fresh;
    afterwards the alias is put back where it pointed."""
    from django.db import connections

    from dbops import routing
    from tests.replica import Replica

    saved = dict(connections.settings[routing.replica_alias()])
    routing.monitor.reset()
    handle = Replica(replica_alias)
    handle.resume()
    handle.catch_up()
    try:
        yield handle
    finally:
        handle.resume()
        connections[routing.replica_alias()].close()
        connections.settings[routing.replica_alias()].update(saved)
        connections[routing.replica_alias()].settings_dict.update(saved)
        routing.monitor.reset()


def pytest_addoption(parser):
    parser.addoption(
        "--pgbouncer",
        action="store_true",
        help="run the tests through a real PgBouncer in transaction mode (Debian's pgbouncer) in "
        "front of the test database, with the DB_PGBOUNCER=true profile",
    )


def pgbouncer_required() -> None:
    """Skip, naming the package, when PgBouncer is absent; under CI=true fail instead."""
    import os

    from devdb import pgbouncer

    try:
        pgbouncer.binary()
    except pgbouncer.PgBouncerMissing as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true: {exc}")
        pytest.skip(str(exc))


# Server connections per database and user when the suite runs through PgBouncer: fewer than
# the threads of the concurrency tests, so clients really take turns on server connections.
PGBOUNCER_TEST_POOL = 6


@pytest.fixture(scope="session", autouse=True)
def _through_pgbouncer(request):
    """With --pgbouncer: every connection of the session goes through a PgBouncer in transaction
    mode in front of the test server, with the DB_PGBOUNCER=true profile."""
    if not request.config.getoption("--pgbouncer"):
        yield None
        return
    pgbouncer_required()
    request.getfixturevalue("django_db_setup")
    from django.db import connections

    from dbops.pooling import pgbouncer_profile
    from devdb import pgbouncer

    default = connections["default"]
    saved = dict(default.settings_dict)
    saved_options = dict(saved["OPTIONS"])
    with pgbouncer.running(
        str(saved["HOST"]), int(saved["PORT"] or 5432), pool_size=PGBOUNCER_TEST_POOL
    ) as bouncer:
        default.close()
        default.settings_dict["OPTIONS"] = dict(saved_options)
        default.settings_dict.update(HOST=bouncer.host, PORT=str(bouncer.port))
        pgbouncer_profile(default.settings_dict)
        connections.settings["default"] = default.settings_dict
        try:
            yield bouncer
        finally:
            default.close()
            default.settings_dict.clear()
            default.settings_dict.update(saved, OPTIONS=saved_options)


@pytest.fixture
def unreachable_database():
    """Point the default connection at a port where nothing listens, then put it back."""
    saved = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(
        HOST="127.0.0.1", PORT=1, OPTIONS={**saved["OPTIONS"], "connect_timeout": 2}
    )
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


@pytest.fixture
def short_service_lock_timeout(settings):
    """Services wait 50 ms for a row lock instead of 2 s: their five attempts give up in a fraction
    of a second (the lock-wait tests of accounts and orders)."""
    settings.DBOPS = {**settings.DBOPS, "SERVICE_LOCK_TIMEOUT_MS": 50}
