"""The ledger partitioned by month: reads that prune, deposit keys unique across partitions, the
statement page; and the conversion itself under a transfer workload with backends killed."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import LedgerEntry, LedgerKey
from accounts.selectors import ledger_entries, month_range
from accounts.services import account_deposit, transfer_create
from dbops.errors import constraint_name
from dbops.partitioning import catalog
from dbops.partitioning.ranges import Interval, partition_name
from tests.accounts.invariants import assert_ledger_matches_balances
from tests.factories import account_create, user_create

LEDGER = "accounts_ledgerentry"
MONTH = Interval("month")
THIS_MONTH = MONTH.floor(datetime.now(UTC))
LAST_MONTH = MONTH.shift(THIS_MONTH, -1)


def scanned_relations(sql: str, params) -> set[str]:
    """The tables a query's plan reads (EXPLAIN, FORMAT JSON): what pruning left."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    found = set()

    def walk(node):
        if "Relation Name" in node:
            found.add(node["Relation Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def backdate(entry_ids, moment: datetime) -> None:
    """Move entries to another month (another partition); their key rows follow (trigger)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_ledgerentry SET created_at = %s WHERE id = ANY(%s)",
            [moment, list(entry_ids)],
        )


@pytest.fixture
def account(db):
    """An account with entries last month and this month."""
    account = account_create(balance="100.00")
    other = account_create(owner=account.owner)
    transfer_create(source_id=account.pk, target_id=other.pk, amount="10")
    backdate(LedgerEntry.objects.values_list("pk", flat=True), LAST_MONTH.replace(day=15))
    transfer_create(source_id=account.pk, target_id=other.pk, amount="5")
    return account


def queryset_sql(queryset) -> tuple[str, tuple]:
    return queryset.query.sql_with_params()


def test_the_ledger_is_partitioned_by_month_with_partitions_ahead(db):
    assert catalog.relkind(connection, LEDGER) == "p"
    names = {p.name for p in catalog.partitions(connection, LEDGER)}
    for step in range(4):  # this month and 3 ahead (DBOPS["PARTITIONED_TABLES"])
        assert partition_name(LEDGER, MONTH, MONTH.shift(THIS_MONTH, step)) in names
    assert catalog.primary_key(connection, LEDGER) == (
        "accounts_ledgerentry_pkey",
        ("id", "created_at"),
    )


def test_a_month_of_the_statement_reads_one_partition(account):
    start, end = month_range(date(LAST_MONTH.year, LAST_MONTH.month, 1))
    month = LedgerEntry.objects.filter(
        account_id=account.pk, created_at__gte=start, created_at__lt=end
    ).order_by("-pk")[:51]
    assert scanned_relations(*queryset_sql(month)) & _partitions() == {
        partition_name(LEDGER, MONTH, LAST_MONTH)
    }
    # The same query without the month reads every partition: the test can tell.
    everything = LedgerEntry.objects.filter(account_id=account.pk).order_by("-pk")[:51]
    assert scanned_relations(*queryset_sql(everything)) & _partitions() == _partitions()
    entries = ledger_entries(
        account_id=account.pk, month=date(LAST_MONTH.year, LAST_MONTH.month, 1)
    )
    assert [e.amount for e in entries] == [Decimal("-10.00"), Decimal("100.00")]


def _partitions() -> set[str]:
    return {p.name for p in catalog.partitions(connection, LEDGER)}


def test_a_deposit_replay_reads_one_partition_of_the_ledger(account):
    first = account_deposit(account_id=account.pk, amount="7.00", idempotency_key="k-1")
    backdate([first.pk], LAST_MONTH.replace(day=20))
    key = LedgerKey.objects.get(account_id=account.pk, idempotency_key="k-1")
    assert key.entry_created_at == LAST_MONTH.replace(day=20)  # followed the entry
    with CaptureQueriesContext(connection) as captured:
        replay = account_deposit(account_id=account.pk, amount="7.00", idempotency_key="k-1")
    assert replay.pk == first.pk
    ledger_reads = [q["sql"] for q in captured.captured_queries if f'FROM "{LEDGER}"' in q["sql"]]
    assert len(ledger_reads) == 1
    # The statement the service sent, values bound (psycopg binds them on the client): its plan.
    assert scanned_relations(ledger_reads[0], None) & _partitions() == {
        partition_name(LEDGER, MONTH, LAST_MONTH)
    }
    assert_ledger_matches_balances()


def test_a_deposit_key_is_unique_per_account_across_partitions_whoever_writes(account):
    account_deposit(account_id=account.pk, amount="3.00", idempotency_key="once")
    # Another month's partition, written behind the services' back: the key table refuses it.
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, idempotency_key,"
                " created_at) VALUES (%s, 1, 1, 'once', %s)",
                [account.pk, LAST_MONTH.replace(day=3)],
            )
    assert constraint_name(refused.value) == "accounts_ledgerkey_pkey"
    # Per account: another account may use the same key.
    other = account_create(owner=account.owner)
    account_deposit(account_id=other.pk, amount="1.00", idempotency_key="once")
    assert LedgerKey.objects.filter(idempotency_key="once").count() == 2
    assert_ledger_matches_balances()


def test_the_statement_page_shows_one_month_of_my_account_and_keeps_it_in_its_links(
    client, account
):
    client.force_login(account.owner)
    last = f"{LAST_MONTH:%Y-%m}"
    page = client.get(f"/accounts/{account.pk}/statement/?month={last}")
    assert page.status_code == 200
    body = page.content.decode()
    assert "−10.00" in body and "−5.00" not in body
    assert f"?month={MONTH.shift(LAST_MONTH, -1):%Y-%m}" in body
    this = client.get(f"/accounts/{account.pk}/statement/").content.decode()
    assert "−5.00" in this and "−10.00" not in this


@pytest.mark.parametrize(
    "month", ["2026-13", "26-01", "2026-1", "２０２６-01", "2026-01\x00", "0001-01"]
)
def test_a_malformed_month_is_a_400(client, account, month):
    client.force_login(account.owner)
    assert client.get(f"/accounts/{account.pk}/statement/", {"month": month}).status_code == 400


def test_someone_elses_statement_is_404(client, account):
    client.force_login(user_create())
    assert client.get(f"/accounts/{account.pk}/statement/").status_code == 404
