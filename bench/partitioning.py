"""Partitioning the ledger while money moves: transfers/s and p99 before, during and after the
conversion, against the same workload with nothing else running, in one run.

On a throwaway PostgreSQL: the project migrated to the point before the conversion (accounts
0002), a ledger of 3,000,000 entries (default) over the past 12 months in SQL, and 4 threads
calling ``transfer_create`` without pause over 10,000 accounts throughout. Then, in order:

1. the workload alone (the baseline);
2. ``migrate accounts 0005``: the partitioned copy and its trigger (0003), the history copied in
   batches and verified (0004), the swap (0005), each step timed;
3. the workload with the ledger partitioned and the old table kept in step by the trigger;
4. ``migrate accounts 0006`` (the old table dropped), then the workload again;
5. once more after VACUUM ANALYZE and a CHECKPOINT (the conversion's aftermath, which autovacuum
   and the checkpointer otherwise do while phases 3 and 4 run), as phase 1 was measured.

Reports transfers/s and latency (p50, p99, max) per phase and against the baseline, the time the
swap held its locks (against its lock timeout), the copy's batches, and the invariants at the end:
money conserved, every balance equal to its ledger, every row copied. Writes
bench/results/partitioning.md.

    .venv/bin/python bench/partitioning.py [--rows 3000000] [--accounts 10000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, table, write_results  # noqa: E402
from bench.dataset import django_setup  # noqa: E402
from devdb import embedded  # noqa: E402

OPENING = Decimal("1000.00")
THREADS = 4


def sql(statement: str, params=None) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def populate(rows: int, accounts: int) -> list[int]:
    """The project before the conversion, ``accounts`` accounts, ``rows`` ledger entries in pairs
    that sum to zero, spread over 12 months; balances = opening + their entries."""
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    call_command("migrate", "accounts", "0002", verbosity=0)
    for app in ("auth", "contenttypes", "dbops", "orders", "sessions", "admin", "axes"):
        call_command("migrate", app, verbosity=0)
    owner = get_user_model().objects.create(username="bench")
    sql("SET statement_timeout = 0")
    sql(
        "INSERT INTO accounts_account (owner_id, name, currency, balance, version, created_at)"
        " SELECT %s, 'bench ' || g, 'EUR', %s, 1, now() FROM generate_series(1, %s) g",
        [owner.pk, OPENING, accounts],
    )
    ids = [row[0] for row in sql("SELECT id FROM accounts_account ORDER BY id")]
    sql(
        "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, created_at)"
        " SELECT id, %s, %s, now() - interval '13 months' FROM accounts_account",
        [OPENING, OPENING],
    )
    sql(
        "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, created_at)"
        " SELECT (%s::bigint[])[1 + (g / 2) %% %s + g %% 2],"
        " CASE WHEN g %% 2 = 0 THEN 1 ELSE -1 END, 0,"
        " now() - interval '12 months' + g * (interval '12 months' / %s)"
        " FROM generate_series(0, %s - 1) g",
        [ids + ids[:1], accounts, rows, rows],
    )
    sql(
        "UPDATE accounts_account a SET balance = s.total FROM (SELECT account_id,"
        " sum(amount) AS total FROM accounts_ledgerentry GROUP BY account_id) s"
        " WHERE s.account_id = a.id"
    )
    sql("VACUUM ANALYZE accounts_account")
    settle()
    return ids


class Workload:
    """``THREADS`` threads calling transfer_create back to back; every call timed."""

    def __init__(self, ids: list[int]):
        self.ids = ids
        self.samples: list[tuple[float, float]] = []  # (started at, ms)
        self.errors: list[tuple[float, str]] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(THREADS)]

    def run(self, i: int) -> None:
        from django.db import DatabaseError, connection

        from accounts.exceptions import InsufficientFunds
        from accounts.services import transfer_create

        rng = random.Random(i)
        try:
            while not self.stopping.is_set():
                source, target = rng.sample(self.ids, 2)
                amount = Decimal(rng.randint(1, 500)) / 100
                started = time.monotonic()
                try:
                    transfer_create(
                        source_id=source,
                        target_id=target,
                        amount=amount,
                        idempotency_key=uuid.uuid4().hex,
                    )
                except InsufficientFunds:
                    continue
                except DatabaseError as exc:
                    self.errors.append((started, type(exc).__name__))
                    connection.close()
                    continue
                self.samples.append((started, (time.monotonic() - started) * 1000))
        finally:
            connection.close()

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def window(self, start: float, end: float) -> dict:
        values = [ms for at, ms in self.samples if start <= at < end]
        seconds = max(end - start, 1e-9)
        return {
            "seconds": end - start,
            "per_s": len(values) / seconds,
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values, default=float("nan")),
            "errors": sum(1 for at, _ in self.errors if start <= at < end),
        }


class SwapTimes(logging.Handler):
    """The milliseconds each swap held its locks, as dbops.partitioning logs them."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.held_ms: list[float] = []
        logging.getLogger("dbops.partitioning").addHandler(self)

    def emit(self, record):
        if getattr(record, "locked_ms", None) is not None:
            self.held_ms.append(record.locked_ms)


def settle() -> None:
    """What the conversion leaves to background work, done now: the copied partitions vacuumed
    and analyzed (autovacuum would, while the workload runs), a checkpoint of the WAL written."""
    from django.db import connection

    connection.close()
    sql("SET statement_timeout = 0")
    sql("VACUUM ANALYZE accounts_ledgerentry")
    sql("CHECKPOINT")


def migrate_to(name: str) -> float:
    from django.core.management import call_command

    started = time.monotonic()
    call_command("migrate", "accounts", name, verbosity=0)
    return time.monotonic() - started


def invariants(rows: int, accounts: int) -> list:
    """[money created (+) / destroyed (-), balances != ledger, ledger rows != seeded + 2 x transfers]."""
    drift = sql("SELECT sum(balance) FROM accounts_account")[0][0] - OPENING * accounts
    mismatched = sql(
        "SELECT count(*) FROM accounts_account a LEFT JOIN (SELECT account_id, sum(amount) AS s"
        " FROM accounts_ledgerentry GROUP BY account_id) l ON l.account_id = a.id"
        " WHERE a.balance <> coalesce(l.s, 0)"
    )[0][0]
    transfers = sql("SELECT count(*) FROM accounts_transfer")[0][0]
    ledger = sql("SELECT count(*) FROM accounts_ledgerentry")[0][0]
    return [f"{drift:+}", mismatched, ledger - (rows + accounts + 2 * transfers)]


def phases(args, workload: Workload) -> tuple[list, dict]:
    """The phases, each a window of the workload's samples; and what the conversion took."""
    marks, steps = {}, {}

    def phase(name: str, work) -> None:
        start = time.monotonic()
        work()
        marks[name] = (start, time.monotonic())

    phase("1. no conversion running (baseline)", lambda: time.sleep(args.seconds))

    def convert():
        for step in ("0003_ledger_partitioned_copy", "0004_ledger_history", "0005_ledger_swap"):
            steps[step] = migrate_to(step)

    phase("2. during the conversion (migrate accounts 0005)", convert)
    phase("3. partitioned, the old table kept in step", lambda: time.sleep(args.seconds))
    steps["0006_ledger_old_drop"] = migrate_to("0006_ledger_old_drop")
    phase("4. partitioned, the old table dropped", lambda: time.sleep(args.seconds))
    settled = time.monotonic()
    settle()
    steps["(VACUUM ANALYZE and CHECKPOINT after the conversion)"] = time.monotonic() - settled
    phase("5. partitioned, after VACUUM ANALYZE and CHECKPOINT", lambda: time.sleep(args.seconds))
    baseline = workload.window(*marks["1. no conversion running (baseline)"])
    rows = []
    for name, (start, end) in marks.items():
        w = workload.window(start, end)
        ratio = w["per_s"] / baseline["per_s"] if baseline["per_s"] else float("nan")
        rows.append(
            [
                name,
                w["seconds"],
                w["per_s"],
                f"{ratio:.2f}x",
                w["p50"],
                w["p99"],
                w["max"],
                w["errors"],
            ]
        )
    return rows, steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=3_000_000, help="ledger entries before")
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=20, help="length of phases 1, 3 and 4")
    args = parser.parse_args()

    with embedded.temporary_server(
        settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
    ) as server:
        django_setup(server.socket_url())
        print(f"populating {args.rows:,} ledger entries...", file=sys.stderr)
        ids = populate(args.rows, args.accounts)
        swaps = SwapTimes()
        workload = Workload(ids)
        workload.start()
        try:
            rows, steps = phases(args, workload)
        finally:
            workload.stop()
        from dbops.models import BackfillRun

        copy = BackfillRun.objects.get(target__startswith="copy accounts_ledgerentry")
        checks = invariants(args.rows, args.accounts)
        partitions = sql(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'accounts_ledgerentry'::regclass"
        )[0][0]
    write_results(
        "partitioning",
        "Partitioning the ledger while transfers run",
        "bench/partitioning.py",
        body(args, rows, steps, swaps.held_ms, copy, checks, partitions),
    )


def body(args, rows, steps, held_ms, copy, checks, partitions) -> str:
    from dbops.partitioning.convert import DEFAULT_LOCK_TIMEOUT_MS

    text = (
        f"A ledger of {args.rows:,} entries over 12 months (plus {args.accounts:,} opening "
        f"entries), {args.accounts:,} accounts; {THREADS} threads calling `transfer_create` back "
        "to back (random accounts, a new idempotency key each) through every phase; PostgreSQL 18 "
        "(embedded, same machine, unix socket). Ratios against phase 1 of the same run.\n\n"
    )
    text += table(
        ["phase", "seconds", "transfers/s", "vs baseline", "p50 ms", "p99 ms", "max ms", "errors"],
        rows,
    )
    text += "\n\n" + table(
        ["migration", "seconds"], [[name, seconds] for name, seconds in steps.items()]
    )
    swap = ", ".join(f"{ms:.1f} ms" for ms in held_ms) or "none logged"
    text += (
        f"\n\nThe swap held its locks (ACCESS EXCLUSIVE on both tables, to the commit) for {swap}; "
        f"its lock timeout is {DEFAULT_LOCK_TIMEOUT_MS} ms. "
        f"The history copy (dbops.BackfillRun #{copy.pk}): {copy.rows_done:,} rows copied in "
        f"{copy.batches:,} batches (the rest arrived through the trigger), longest batch "
        f"{copy.longest_batch_ms:.0f} ms, {copy.retries} retries, {copy.splits} splits. "
        f"{partitions} partitions afterwards.\n\n"
    )
    text += table(
        [
            "money created (+) / destroyed (-)",
            "balances != ledger",
            "ledger rows missing (-) / extra (+)",
        ],
        [checks],
    )
    return text + "\n"


if __name__ == "__main__":
    main()
