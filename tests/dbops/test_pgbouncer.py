"""Through a real PgBouncer in transaction mode with one server connection: whatever the app does,
the next client of that server connection finds it as new. Needs Debian's pgbouncer (skipped
without it, naming the package; under CI=true it must run)."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.db import connection, connections
from django.db.models import Index
from django.test import Client
from zeal import zeal_context

from accounts.services import transfer_create
from dbops.operations import AddIndexConcurrently
from dbops.pooling import DirectConnectionRequired
from dbops.timeouts import lock_timeout
from orders.services import order_place
from tests.conftest import pgbouncer_required
from tests.factories import account_create, customer_create, product_create, user_create
from tests.helpers import database_url, default_through_pgbouncer

pytestmark = pytest.mark.django_db(transaction=True)

FRESH = (
    "SELECT pg_backend_pid(), current_setting('lock_timeout'), "
    "current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout'), "
    "(SELECT count(*) FROM pg_prepared_statements), (SELECT count(*) FROM pg_cursors)"
)


@pytest.fixture
def pooled():
    """The default connection through a PgBouncer (transaction mode, ONE server connection) in
    front of the test server, with the DB_PGBOUNCER=true profile; the direct URL beside it."""
    pgbouncer_required()
    direct = database_url()
    with default_through_pgbouncer(pool_size=1) as bouncer:
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


def test_requests_services_and_commands_leave_no_session_state(pooled):
    url, direct = pooled
    pid = next_client(url)[0]
    user = user_create()
    source = account_create(owner=user, balance="50.00")
    target = account_create(owner=user)
    customer = customer_create(user=user)
    product = product_create(stock=5)
    transfer_create(source_id=source.pk, target_id=target.pk, amount=Decimal("5.00"))
    order_place(customer_id=customer.pk, lines=[(product.pk, 1)])
    client = Client()
    with zeal_context():
        client.force_login(user)
    for path in ("/accounts/", "/accounts/transfers/", "/orders/", "/orders/products/"):
        assert client.get(path).status_code == 200
    with zeal_context():
        call_command(
            "backfill_column",
            "orders.Product",
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


def test_work_that_needs_a_session_setting_refuses_the_pooler_naming_the_direct_url(pooled):
    with pytest.raises(
        DirectConnectionRequired, match="DB_PGBOUNCER=false python manage.py migrate"
    ):
        with lock_timeout(1000):
            pass
    operation = AddIndexConcurrently("product", index=Index(fields=["name"], name="pooled_idx"))
    with pytest.raises(DirectConnectionRequired, match="lock_timeout outside a transaction"):
        operation._run(
            type("Editor", (), {"connection": connection})(), lambda: None, "CREATE INDEX"
        )
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
    product_create()
    from orders.models import Product

    assert len(list(Product.objects.only("pk").iterator(chunk_size=1))) == 1
