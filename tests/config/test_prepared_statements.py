"""DB_PREPARE_THRESHOLD really makes the hot paths run prepared statements on the server."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import pytest
from django.db import connection

from accounts.services import transfer_create
from config.database import database_settings
from orders.services import order_place
from tests.factories import account_create, customer_create, product_create, user_create
from tests.helpers import database_url

pytestmark = pytest.mark.django_db(transaction=True)


def options_changed_by(environ: dict[str, str]) -> dict:
    """The connection OPTIONS the variables change, as config.database builds them."""
    base = database_settings({"DATABASE_URL": database_url()})["default"]["OPTIONS"]
    changed = database_settings({"DATABASE_URL": database_url(), **environ})["default"]["OPTIONS"]
    return {key: value for key, value in changed.items() if base.get(key) != value}


@contextmanager
def connected_with(environ: dict[str, str]):
    """This thread's connection, reopened with the OPTIONS the variables give; restored after."""
    saved = connection.settings_dict["OPTIONS"]
    # Whatever the suite runs with (DB_PREPARE_THRESHOLD may be set), start from the default.
    setting = options_changed_by({"DB_PREPARE_THRESHOLD": "0"})
    default = {key: value for key, value in saved.items() if key not in setting}
    connection.close()
    connection.settings_dict["OPTIONS"] = {**default, **options_changed_by(environ)}
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["OPTIONS"] = saved


def prepared_statements() -> list[str]:
    """Statements psycopg prepared on this connection (not SQL-level PREPAREs)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
        return [row[0] for row in cursor.fetchall()]


def transfers(n: int) -> None:
    owner = user_create()
    source = account_create(owner=owner, balance="100.00")
    target = account_create(owner=owner)
    for _ in range(n):
        transfer_create(
            source_id=source.pk,
            target_id=target.pk,
            amount="1.00",
            idempotency_key=uuid.uuid4().hex,
            actor=owner,
        )


def orders(n: int) -> None:
    customer = customer_create()
    product = product_create(stock=100)
    for _ in range(n):
        order_place(customer_id=customer.pk, lines=[(product.pk, 1)])


def test_the_setting_changes_only_the_binding_and_the_threshold():
    assert options_changed_by({"DB_PREPARE_THRESHOLD": "2"}) == {
        "server_side_binding": True,
        "prepare_threshold": 2,
    }


def test_every_statement_of_a_transfer_is_prepared_when_the_threshold_is_set():
    with connected_with({"DB_PREPARE_THRESHOLD": "2"}):
        transfers(3)
        statements = prepared_statements()
    assert any("FOR NO KEY UPDATE" in sql for sql in statements), statements
    for start in (
        'SELECT "accounts_transfer"',
        'UPDATE "accounts_account"',
        'INSERT INTO "accounts_transfer"',
        'INSERT INTO "accounts_ledgerentry"',
        "SELECT set_config",
    ):
        assert any(sql.startswith(start) for sql in statements), (start, statements)


def test_the_statements_of_an_order_are_prepared_when_the_threshold_is_set():
    with connected_with({"DB_PREPARE_THRESHOLD": "2"}):
        orders(3)
        statements = prepared_statements()
    for start in (
        'SELECT "orders_product"',
        'UPDATE "orders_product"',
        'INSERT INTO "orders_order"',
        'INSERT INTO "orders_orderitem"',
        'INSERT INTO "orders_payment"',
    ):
        assert any(sql.startswith(start) for sql in statements), (start, statements)


def test_nothing_is_prepared_by_default():
    with connected_with({}):
        transfers(3)
        orders(3)
        statements = prepared_statements()
    assert statements == []
