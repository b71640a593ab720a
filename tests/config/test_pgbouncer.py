"""Through a real PgBouncer in transaction mode with one server connection: this project's
services, pages and commands leave the server connection as a new session would find it. Needs
Debian's pgbouncer (skipped without it, naming the package; under CI=true it must run). The
toolkit's own tests of the same: tests/dbops/test_pgbouncer.py."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from zeal import zeal_context

from accounts.services import transfer_create
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


def test_a_copy_import_leaves_no_temporary_table_or_setting_for_the_next_client(pooled, tmp_path):
    """Each COPY batch creates its temporary table ON COMMIT DROP: with one server connection,
    the second batch would find the first one's table if it outlived its transaction."""
    url, _ = pooled
    pid = next_client(url)[0]
    path = tmp_path / "products.csv"
    path.write_text(
        "sku,name,price,stock\n" + "".join(f"PB-{i},Pooled {i},1.00,{i}\n" for i in range(30))
    )
    for _ in range(2):  # inserted, then unchanged
        with zeal_context():
            call_command(
                "import_products", str(path), "--copy", "--batch-size", "10", stdout=StringIO()
            )
    connection.close()

    assert next_client(url) == (pid, "0", "0", "0", 0, 0)
    with psycopg.connect(url, autocommit=True) as other:
        temporary = "SELECT count(*) FROM pg_class WHERE relpersistence = 't'"
        assert other.execute(temporary).fetchone()[0] == 0
        assert other.execute("SELECT count(*) FROM orders_product").fetchone()[0] == 30
