"""Statements compiled once from the ORM: same SQL every call, new values bound each time."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.models import F
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from dbops.statements import AnyOf, CompiledSelect, CompiledUpdate, insert_sql
from tests.dbops_testapp.factories import parent_create, person_create
from tests.dbops_testapp.models import Parent

pytestmark = pytest.mark.django_db


def test_a_compiled_select_binds_new_values_into_the_same_sql():
    owner = person_create()
    a, b, c = (parent_create(owner=owner, balance=Decimal(n)) for n in (1, 2, 3))
    by_ids = CompiledSelect(
        lambda ids: Parent.objects.filter(AnyOf(F("pk"), ids)).order_by("pk"), [-1]
    )
    with CaptureQueriesContext(connection) as queries:
        first = by_ids.objects([c.pk, a.pk])
        second = by_ids.objects([b.pk])
    assert [x.pk for x in first] == [a.pk, c.pk] and [x.pk for x in second] == [b.pk]
    assert second[0].balance == Decimal("2.00") and second[0]._state.adding is False
    assert queries[0]["sql"].split("WHERE")[0] == queries[1]["sql"].split("WHERE")[0]
    assert "= ANY(" in by_ids.sql()


def test_a_compiled_update_changes_only_the_rows_the_new_values_name():
    owner = person_create()
    a, b = (parent_create(owner=owner, balance=Decimal("10")) for _ in range(2))
    add = CompiledUpdate(
        lambda pk, amount: (
            Parent.objects.filter(pk=pk),
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
    top = CompiledSelect(lambda n: Parent.objects.order_by("pk")[:n], 7)
    with pytest.raises(ValueError, match="is not an SQL parameter"):
        top.rows()


def test_examples_must_be_distinct():
    same = CompiledSelect(lambda a, b: Parent.objects.filter(pk=a, version=b), 5, 5)
    with pytest.raises(ValueError, match="must be distinct"):
        same.rows(1, 1)


@pytest.mark.django_db(transaction=True)
def test_a_compiled_lock_refuses_to_run_outside_a_transaction():
    lock = CompiledSelect(
        lambda ids: Parent.objects.select_for_update().filter(AnyOf(F("pk"), ids)), [-1]
    )
    with transaction.atomic():
        assert lock.rows([1]) == []  # compiled inside a transaction
    assert connection.get_autocommit()
    with pytest.raises(TransactionManagementError):
        lock.rows([1])


def test_insert_sql_quotes_identifiers_and_leaves_database_defaults_out():
    sql = insert_sql(Parent, ("owner", "name", "balance"), rows=2, returning=("id", "created_at"))
    assert sql == (
        'INSERT INTO "dbops_testapp_parent" ("owner_id", "name", "balance") '
        'VALUES (%s, %s, %s), (%s, %s, %s) RETURNING "id", "created_at"'
    )
