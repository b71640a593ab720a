"""Statements compiled once from the ORM: same SQL every call, new values bound each time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import NOT_PROVIDED, F
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from accounts.models import Account, LedgerEntry, Transfer
from accounts.sql import LEDGER_FIELDS, TRANSFER_FIELDS
from dbops.statements import AnyOf, CompiledSelect, CompiledUpdate, insert_sql
from orders.models import Order, OrderItem, Payment
from orders.sql import ITEM_FIELDS, ORDER_FIELDS, PAYMENT_FIELDS
from tests.factories import account_create, user_create

pytestmark = pytest.mark.django_db


def test_a_compiled_select_binds_new_values_into_the_same_sql():
    owner = user_create()
    a, b, c = (account_create(owner=owner, balance=str(n)) for n in (1, 2, 3))
    by_ids = CompiledSelect(
        lambda ids: Account.objects.filter(AnyOf(F("pk"), ids)).order_by("pk"), [-1]
    )
    with CaptureQueriesContext(connection) as queries:
        first = by_ids.objects([c.pk, a.pk])
        second = by_ids.objects([b.pk])
    assert [x.pk for x in first] == [a.pk, c.pk] and [x.pk for x in second] == [b.pk]
    assert second[0].balance == Decimal("2.00") and second[0]._state.adding is False
    assert queries[0]["sql"].split("WHERE")[0] == queries[1]["sql"].split("WHERE")[0]
    assert "= ANY(" in by_ids.sql()


def test_a_compiled_update_changes_only_the_rows_the_new_values_name():
    owner = user_create()
    a, b = account_create(owner=owner, balance="10"), account_create(owner=owner, balance="10")
    add = CompiledUpdate(
        lambda pk, amount: (
            Account.objects.filter(pk=pk),
            {"balance": F("balance") + amount, "version": F("version") + 1},
        ),
        -1,
        Decimal("0.01"),
    )
    assert add.execute(a.pk, Decimal("5.00")) == 1
    assert add.execute(-42, Decimal("5.00")) == 0
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.balance, b.balance) == (Decimal("15.00"), Decimal("10.00"))
    assert (a.version, b.version) == (2, 1)  # the statement's own constant, bound as such


def test_an_example_written_into_the_sql_text_is_refused():
    top = CompiledSelect(lambda n: Account.objects.order_by("pk")[:n], 7)
    with pytest.raises(ValueError, match="is not an SQL parameter"):
        top.rows()


def test_examples_must_be_distinct():
    same = CompiledSelect(lambda a, b: Account.objects.filter(pk=a, version=b), 5, 5)
    with pytest.raises(ValueError, match="must be distinct"):
        same.rows(1, 1)


@pytest.mark.django_db(transaction=True)
def test_a_compiled_lock_refuses_to_run_outside_a_transaction():
    lock = CompiledSelect(
        lambda ids: Account.objects.select_for_update().filter(AnyOf(F("pk"), ids)), [-1]
    )
    with transaction.atomic():
        assert lock.rows([1]) == []  # compiled inside a transaction
    assert connection.get_autocommit()
    with pytest.raises(TransactionManagementError):
        lock.rows([1])


def test_insert_sql_quotes_identifiers_and_leaves_database_defaults_out():
    sql = insert_sql(Account, ("owner", "name", "balance"), rows=2, returning=("id", "created_at"))
    assert sql == (
        'INSERT INTO "accounts_account" ("owner_id", "name", "balance") '
        'VALUES (%s, %s, %s), (%s, %s, %s) RETURNING "id", "created_at"'
    )


def _left_to_the_database(field) -> bool:
    """A column an INSERT may leave out and still write what ``Model.objects.create`` would:
    the database's default, or NULL where the model has no default either."""
    return field.db_default is not NOT_PROVIDED or (field.null and not field.has_default())


@pytest.mark.parametrize(
    "model, fields",
    [
        (Transfer, TRANSFER_FIELDS),
        (LedgerEntry, LEDGER_FIELDS),
        (Order, ORDER_FIELDS),
        (OrderItem, ITEM_FIELDS),
        (Payment, PAYMENT_FIELDS),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_the_hot_path_inserts_name_every_column_the_orm_would_fill(model, fields):
    """A field added with a Python default must join the hot path's INSERT, or fail here."""
    listed = {model._meta.get_field(name) for name in fields}
    missing = [
        field.name
        for field in model._meta.concrete_fields
        if not field.primary_key and field not in listed and not _left_to_the_database(field)
    ]
    assert missing == []
