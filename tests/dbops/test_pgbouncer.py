"""Through a real PgBouncer in transaction mode with one server connection: whatever the app does,
the next client of that server connection finds it as new. Needs Debian's pgbouncer (skipped
without it, naming the package; under CI=true it must run)."""

from __future__ import annotations

from io import StringIO

import psycopg
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections
from django.db.migrations.loader import MigrationLoader
from django.db.models import Index
from django.test import Client
from zeal import zeal_context

from dbops.migrate_lock import migrate_lock
from dbops.operations import AddIndexConcurrently
from dbops.pooling import DirectConnectionRequired
from dbops.timeouts import lock_timeout
from tests.conftest import pgbouncer_required
from tests.dbops_testapp.factories import parent_create, person_create
from tests.dbops_testapp.models import Item, Parent
from tests.helpers import database_url, default_through_pgbouncer

pytestmark = pytest.mark.django_db(transaction=True)

FRESH = (
    "SELECT pg_backend_pid(), current_setting('lock_timeout'), "
    "current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'), "
    "(SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_cursors)"
)


@pytest.fixture
def pooled(request):
    """The default connection through a PgBouncer (transaction mode, ONE server connection, or as
    many as the test's ``pool_size`` mark says) in front of the test server, with the
    DB_PGBOUNCER=true profile; the direct URL beside it."""
    pgbouncer_required()
    mark = request.node.get_closest_marker("pool_size")
    direct = database_url()
    with default_through_pgbouncer(pool_size=mark.args[0] if mark else 1) as bouncer:
        yield bouncer.url(connection.settings_dict["NAME"]), direct


def next_client(url: str) -> tuple:
    with psycopg.connect(url, autocommit=True) as other:
        return other.execute(FRESH).fetchone()


def advisory_locks(direct: str) -> int:
    with psycopg.connect(direct, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[
            0
        ]


def test_a_session_setting_would_reach_the_next_client(pooled):
    """The control: the pool really hands the same server session to the next client."""
    url, _ = pooled
    with psycopg.connect(url, autocommit=True) as first:
        pid = first.execute("SELECT pg_backend_pid()").fetchone()[0]
        first.execute("SET lock_timeout = '4321ms'")
    with psycopg.connect(url, autocommit=True) as second:
        assert second.execute(
            "SELECT pg_backend_pid(), current_setting('lock_timeout')"
        ).fetchone() == (
            pid,
            "4321ms",
        )
        second.execute("RESET lock_timeout")


def test_pgbouncer_answers_after_logging_more_than_a_pipe_holds(pooled):
    """PgBouncer logs two lines for every client (its login, its close): 600 clients are some
    170 KiB of log. Its stderr was a pipe that nobody read: past 64 KiB PgBouncer blocked on it
    whole, and make test-pgbouncer hung in the middle of a price raise."""
    url, _ = pooled
    for _ in range(600):
        # connect_timeout: a frozen PgBouncer fails the test instead of hanging it.
        with psycopg.connect(url, autocommit=True, connect_timeout=5, prepare_threshold=None):
            pass
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as last:
        assert last.execute("SELECT 1").fetchone() == (1,)


def test_the_toolkits_pages_and_commands_leave_no_session_state(pooled):
    url, direct = pooled
    pid = next_client(url)[0]
    user = person_create()
    parent = parent_create(owner=user, name="pooled", stock=5)
    client = Client()
    with zeal_context():
        client.force_login(user)
    assert client.get("/parents/").status_code == 200
    assert (
        client.post(f"/parents/{parent.pk}/take/", {"quantity": "1", "key": "k"}).status_code == 302
    )
    assert client.get("/health/ready").status_code == 200
    with zeal_context():
        call_command(
            "backfill_column",
            "dbops_testapp.Parent",
            "name",
            "--expression",
            "upper(name)",
            "--where",
            "name <> upper(name)",
            stdout=StringIO(),
        )
        call_command("db_doctor", "--json", stdout=StringIO(), stderr=StringIO())
    connection.close()

    # The same server connection (one in the pool), as a new session would have it.
    assert next_client(url) == (pid, "0", "0", "0", 0, 0)
    assert advisory_locks(direct) == 0
    assert Parent.objects.get(pk=parent.pk).name == "POOLED"


def test_work_that_needs_a_session_setting_refuses_the_pooler_naming_the_direct_url(pooled):
    with pytest.raises(DirectConnectionRequired, match="over a direct connection to PostgreSQL"):
        with lock_timeout(1000):
            pass
    operation = AddIndexConcurrently("item", index=Index(fields=["name"], name="pooled_idx"))
    state = MigrationLoader(connection).project_state()
    new_state = state.clone()
    operation.state_forwards("dbops_testapp", new_state)
    with pytest.raises(DirectConnectionRequired, match="cannot run in a transaction"):
        with connection.schema_editor(atomic=False) as editor:
            operation.database_forwards("dbops_testapp", editor, state, new_state)
    # Inside a transaction the setting is transaction-local: fine through the pooler.
    from django.db import transaction

    with transaction.atomic(), lock_timeout(1000):
        pass
    warnings = [m.id for m in run_checks(databases=["default"])]
    assert "dbops.W003" in warnings


def test_the_profile_has_no_server_side_cursors_and_no_startup_options(pooled):
    settings_dict = connections["default"].settings_dict
    assert settings_dict["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert "options" not in settings_dict["OPTIONS"]
    # An iterator() (a named cursor on a direct connection) works through the pooler.
    Item.objects.create(name="pooled")
    assert len(list(Item.objects.only("pk").iterator(chunk_size=1))) == 1


@pytest.mark.pool_size(3)  # migrate's lock holds one server connection for the whole run
def test_one_migrate_at_a_time_through_the_pooler_and_no_lock_left(pooled):
    """Through the pooler the lock is held in an open transaction (a session lock would stay on a
    server connection other clients use); atomic migrations get transaction-local timeouts."""
    _, direct = pooled
    with migrate_lock("default"):
        assert advisory_locks(direct) == 1
        with pytest.raises(CommandError, match="Another migrate is running on this database"):
            call_command("migrate", "migrationsapp", verbosity=0)
    assert advisory_locks(direct) == 0
    call_command("migrate", "migrationsapp", "0005", verbosity=0)
    call_command("migrate", "migrationsapp", verbosity=0)
    assert advisory_locks(direct) == 0
