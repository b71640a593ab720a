"""The ledger partitioned by month: reads that prune, deposit keys unique across partitions, the
statement page; and the conversion itself under a transfer workload with backends killed."""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
from datetime import UTC, date, datetime
from decimal import Decimal

import psycopg
import pytest
from django.core.management import call_command
from django.db import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.db.migrations.loader import MigrationLoader
from django.test.utils import CaptureQueriesContext
from zeal import zeal_context

from accounts.exceptions import InsufficientFunds
from accounts.models import LedgerEntry, LedgerKey, Transfer
from accounts.selectors import ledger_entries, month_range
from accounts.services import account_deposit, transfer_create
from dbops.errors import constraint_name
from dbops.models import BackfillRun
from dbops.partitioning import PartitioningError, catalog
from dbops.partitioning import operations as partition_operations
from dbops.partitioning.ranges import Interval, partition_name
from tests.accounts.invariants import assert_ledger_matches_balances, total_money
from tests.factories import account_create, user_create
from tests.helpers import in_threads, raw_connection

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
    # The statement the service sent: its plan. Values are bound in the text on the client by
    # default; with server-side binding (DB_PREPARE_THRESHOLD) the text has $1, $2: plan the
    # same lookup from the ORM instead.
    sent = ledger_reads[0]
    if "$1" in sent:
        same = LedgerEntry.objects.filter(pk=first.pk, created_at=key.entry_created_at).order_by()
        assert '"created_at" = $' in sent
        sent, params = queryset_sql(same[:1])
    else:
        params = None
    assert scanned_relations(sent, params) & _partitions() == {
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


# The conversion under load ------------------------------------------------------------------

CONVERSION_MIGRATIONS = [
    "0003_ledger_partitioned_copy",
    "0004_ledger_history",
    "0005_ledger_swap",
    "0006_ledger_old_drop",
]
HISTORY_ROWS = 40_000
OPENING = Decimal("1000.00")


def legacy_ledger() -> None:
    """The ledger as it was before its conversion (accounts 0002): a plain table, built from the
    migration state at 0002, no copy, no trigger; migrations 0003-0006 unrecorded, so `migrate`
    runs them again, as on a database that never had them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TABLE IF EXISTS accounts_ledgerentry, accounts_ledgerentry_partitioned,"
            " accounts_ledgerentry_old CASCADE"
        )
        cursor.execute("DROP FUNCTION IF EXISTS accounts_ledgerkey_keep()")
        cursor.execute("DELETE FROM accounts_ledgerkey")
        cursor.execute(
            "DELETE FROM django_migrations WHERE app = 'accounts' AND name = ANY(%s)",
            [CONVERSION_MIGRATIONS],
        )
    state = MigrationLoader(connection).project_state(("accounts", "0002_ledgerkey"))
    with connection.schema_editor() as editor:
        editor.create_model(state.apps.get_model("accounts", "LedgerEntry"))


def seed(accounts: int) -> tuple[list[int], dict[int, int]]:
    """Accounts with a keyed opening deposit (through the service) and a year of history (SQL, in
    pairs that sum to zero); returns the ids and each opening entry's id."""
    owner = user_create()
    ids, openings = [], {}
    for _ in range(accounts):
        account = account_create(owner=owner)
        entry = account_deposit(account_id=account.pk, amount=OPENING, idempotency_key="open")
        ids.append(account.pk)
        openings[account.pk] = entry.pk
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, created_at)"
            " SELECT (%s::bigint[])[1 + (g / 2) %% %s + g %% 2], CASE WHEN g %% 2 = 0 THEN 1 ELSE -1 END,"
            " 0, now() - (g %% 12) * interval '1 month' - interval '1 day'"
            " FROM generate_series(0, %s - 1) g",
            [ids + ids[:1], accounts, HISTORY_ROWS],
        )
        cursor.execute(
            "UPDATE accounts_account a SET balance = s.total FROM (SELECT account_id,"
            " sum(amount) AS total FROM accounts_ledgerentry GROUP BY account_id) s"
            " WHERE s.account_id = a.id"
        )
    return ids, openings


class Workload:
    """Writers moving money with idempotency keys and replaying them; a killer of their backends."""

    def __init__(self, ids: list[int], openings: dict[int, int]):
        self.ids, self.openings = ids, openings
        self.stop = threading.Event()
        self.pids: dict[int, int] = {}
        self.transfers: dict[str, int] = {}  # key -> transfer id
        self.deposits: dict[tuple[int, str], tuple[int, Decimal]] = {}  # -> (entry id, amount)
        self.wrong: list[str] = []  # replays that did not return the first result
        self.kills = 0
        self.refused = 0
        self.done = 0  # operations finished (with their replay)
        self.errors: list[BaseException] = []
        self.progress = threading.Condition()

    def wait_for(self, condition, timeout: float = 120) -> None:
        with self.progress:
            moved = self.progress.wait_for(lambda: self.errors or condition(), timeout)
        assert not self.errors, self.errors
        assert moved, "the workload stopped moving"

    def writer(self, worker: int) -> None:
        try:
            self._write(worker)
        except BaseException as exc:
            with self.progress:
                self.errors.append(exc)
                self.progress.notify_all()
            raise

    def _finished(self) -> None:
        with self.progress:
            self.done += 1
            self.progress.notify_all()

    def _until_done(self, worker: int, call):
        """``call()`` again after a killed connection, as a client retries with the same key."""
        for _ in range(100):
            try:
                connection.ensure_connection()
                self.pids[worker] = connection.connection.info.backend_pid
                return call()
            except InsufficientFunds:
                self.refused += 1
                return None
            except (OperationalError, InterfaceError, psycopg.OperationalError):
                connection.close()  # killed, or a lock wait given up: the client tries again
        raise AssertionError("a call failed 100 times")

    def _write(self, worker: int) -> None:
        rng = random.Random(worker)
        for n in itertools.count():
            if self.stop.is_set():
                return
            if rng.random() < 0.7:
                self._transfer(worker, rng, f"t-{worker}-{n}")
            else:
                self._deposit(worker, rng, f"d-{worker}-{n}")
            self._finished()
            if rng.random() < 0.2:  # a replay of a deposit made before the conversion began
                account_id = rng.choice(self.ids)
                entry = self._until_done(
                    worker,
                    lambda a=account_id: account_deposit(
                        account_id=a, amount=OPENING, idempotency_key="open"
                    ),
                )
                if entry.pk != self.openings[account_id]:
                    self.wrong.append(f"opening of {account_id}: {entry.pk}")

    def _transfer(self, worker, rng, key):
        source, target = rng.sample(self.ids, 2)
        amount = Decimal(rng.randint(1, 500)) / 100

        def call():
            return transfer_create(
                source_id=source, target_id=target, amount=amount, idempotency_key=key
            )

        first = self._until_done(worker, call)
        if first is not None:
            self.transfers[key] = first.pk
            if self._until_done(worker, call).pk != first.pk:
                self.wrong.append(key)

    def _deposit(self, worker, rng, key):
        account_id, amount = rng.choice(self.ids), Decimal(rng.randint(1, 500)) / 100

        def call():
            return account_deposit(account_id=account_id, amount=amount, idempotency_key=key)

        first = self._until_done(worker, call)
        self.deposits[(account_id, key)] = (first.pk, amount)
        if self._until_done(worker, call).pk != first.pk:
            self.wrong.append(key)

    def killer(self, _: int) -> None:
        """Every 0.2-0.4 s, terminate a writer's backend, mid-transaction or between."""
        rng = random.Random(99)
        with raw_connection() as killer:
            while not self.stop.wait(rng.uniform(0.2, 0.4)):
                if self.pids:
                    pid = rng.choice(list(self.pids.values()))
                    killer.execute("SELECT pg_terminate_backend(%s)", [pid])
                    with self.progress:
                        self.kills += 1
                        self.progress.notify_all()


class CopyKiller:
    """Terminates the backend of the history copy while it runs a batch, twice."""

    def __init__(self):
        self.batches = 0
        self.due = threading.Semaphore(0)
        self.killed: list[int] = []

    def progress(self, p) -> None:  # the migration's progress hook, in migrate's thread
        self.batches += 1
        if self.batches in (2, 4):
            self.due.release()

    def run(self, _: int) -> None:
        with raw_connection() as killer:
            for _ in range(2):
                if not self.due.acquire(timeout=120):
                    return
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    row = killer.execute(
                        "SELECT pid FROM pg_stat_activity WHERE state = 'active'"
                        " AND query LIKE 'WITH next_keys%%INSERT INTO%%'"
                    ).fetchone()
                    if row:
                        killer.execute("SELECT pg_terminate_backend(%s)", [row[0]])
                        self.killed.append(row[0])
                        break
                    time.sleep(0.002)


def migrate_until_done() -> int:
    """``migrate accounts`` again after a failure, as an operator would; returns the failures."""
    for failures in range(10):
        try:
            with zeal_context():
                call_command("migrate", "accounts", verbosity=0)
            return failures
        except (DatabaseError, psycopg.Error, PartitioningError):
            connection.close()
    raise AssertionError("migrate failed 10 times")


@pytest.mark.django_db(transaction=True)
def test_the_conversion_under_transfers_and_killed_backends_loses_and_doubles_nothing(
    monkeypatch,
):
    legacy_ledger()
    try:
        ids, openings = seed(accounts=20)
        seeded_rows, total = LedgerEntry.objects.count(), total_money()
        workload, copy_killer = Workload(ids, openings), CopyKiller()
        monkeypatch.setattr(partition_operations, "_progress", copy_killer.progress)
        helpers = threading.Thread(target=lambda: in_threads(2, background))

        def background(i):
            return copy_killer.run(i) if i == 0 else workload.killer(i)

        writers = threading.Thread(target=lambda: in_threads(4, workload.writer))
        writers.start()
        helpers.start()
        # Money is moving before the conversion starts, and goes on moving after it, with
        # backends killed all along.
        workload.wait_for(lambda: workload.done >= 50)
        failures = migrate_until_done()
        after = workload.done
        workload.wait_for(lambda: workload.done >= after + 50 and workload.kills >= 5)
        workload.stop.set()
        copy_killer.due.release(2)
        writers.join(120)
        helpers.join(120)
    finally:
        migrate_until_done()  # whatever happened, the suite goes on with the converted ledger
    assert catalog.relkind(connection, LEDGER) == "p"
    assert catalog.relkind(connection, f"{LEDGER}_old") is None
    assert len(copy_killer.killed) == 2 and workload.kills >= 5, (
        copy_killer.killed,
        workload.kills,
    )
    [copy_run] = BackfillRun.objects.filter(target__startswith=f"copy {LEDGER}")
    assert copy_run.status == "done"
    # Nothing lost, nothing doubled: every replay returned the first result, every balance is
    # the sum of its entries, and the money is what was there plus what was deposited.
    assert workload.errors == [] and workload.wrong == []
    assert_ledger_matches_balances()
    deposited = sum(amount for _, amount in workload.deposits.values())
    assert total_money() == total + deposited
    assert Transfer.objects.count() == len(workload.transfers) > 0
    assert LedgerEntry.objects.count() == (
        seeded_rows + 2 * len(workload.transfers) + len(workload.deposits)
    )
    keys = {
        (account_id, key): entry_id
        for account_id, key, entry_id in LedgerKey.objects.values_list(
            "account_id", "idempotency_key", "entry_id"
        )
    }
    assert len(keys) == len(ids) + len(workload.deposits)
    assert {k: v for k, v in keys.items() if k[1] != "open"} == {
        k: entry_id for k, (entry_id, _) in workload.deposits.items()
    }
    print(  # noqa: T201 (shown with -s: what this run went through)
        f"\nconversion: {failures} failed migrate runs, copy killed {len(copy_killer.killed)}x, "
        f"writers killed {workload.kills}x, {len(workload.transfers)} transfers, "
        f"{len(workload.deposits)} deposits, {workload.refused} refused"
    )


def test_the_statement_page_runs_a_constant_number_of_queries(client, account):
    client.force_login(account.owner)
    path = f"/accounts/{account.pk}/statement/"

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(path).status_code == 200
        return len(captured)

    few = queries()
    other = account_create(owner=account.owner)
    for _ in range(30):
        transfer_create(source_id=account.pk, target_id=other.pk, amount="1")
    assert queries() == few == 4  # session, user, the account, the page of entries
