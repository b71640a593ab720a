"""Transfers: the real service vs hand-written psycopg (the floor) vs a naive ORM version.

For 1, 4 and 8 threads, over 100,000 accounts (uniform: little contention) and over 10 hot
accounts (heavy contention), each for a fixed time, in one run against a throwaway PostgreSQL:

(a) ``accounts.services.transfer_create`` (with an idempotency key, as the web form calls it);
(b) the same transfer written directly in psycopg: BEGIN; SELECT ... ORDER BY id FOR NO KEY UPDATE;
    two UPDATEs; INSERT transfer; INSERT two ledger entries; COMMIT;
(c) naive Django: read both accounts, change balances in Python, save(), no transaction, no lock.

Every run starts from the same state and ends with an invariant check: money conserved and every
balance equal to the sum of its ledger entries. Writes bench/results/transfers.md.

    .venv/bin/python bench/transfers.py [--seconds 5] [--accounts 100000]
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import uuid
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import LogCounter, percentile, table, threads_for, write_results  # noqa: E402
from devdb import embedded  # noqa: E402

OPENING = Decimal("1000.00")
THREADS = (1, 4, 8)


def reset(accounts: int) -> None:
    """Every run starts here: all balances OPENING, one opening ledger entry each, no transfers."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE accounts_ledgerentry, accounts_transfer")
        cursor.execute(
            "UPDATE accounts_account SET balance = %s, version = 1 WHERE balance <> %s",
            [OPENING, OPENING],
        )
        cursor.execute(
            "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, created_at)"
            " SELECT id, %s, %s, now() FROM accounts_account",
            [OPENING, OPENING],
        )
    connection.close()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE accounts_account")
        cursor.execute("VACUUM ANALYZE accounts_ledgerentry")


def populate(accounts: int) -> list[int]:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    owner, _ = get_user_model().objects.get_or_create(username="bench")
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE accounts_ledgerentry, accounts_transfer, accounts_account CASCADE")
        cursor.execute(
            "INSERT INTO accounts_account (owner_id, name, currency, balance, version, created_at)"
            " SELECT %s, 'bench ' || g, 'EUR', %s, 1, now() FROM generate_series(1, %s) g",
            [owner.pk, OPENING, accounts],
        )
        cursor.execute("SELECT id FROM accounts_account ORDER BY id")
        return [row[0] for row in cursor.fetchall()]


def invariants(accounts: int) -> tuple[Decimal, int]:
    """(money created or destroyed, accounts whose balance differs from their ledger)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(balance) FROM accounts_account")
        drift = cursor.fetchone()[0] - OPENING * accounts
        cursor.execute(
            "SELECT count(*) FROM accounts_account a"
            " LEFT JOIN (SELECT account_id, sum(amount) AS s FROM accounts_ledgerentry GROUP BY account_id) l"
            " ON l.account_id = a.id WHERE a.balance <> coalesce(l.s, 0)"
        )
        return drift, cursor.fetchone()[0]


def service_transfer(conn_state, source: int, target: int, amount: Decimal) -> None:
    from accounts.services import transfer_create

    transfer_create(
        source_id=source, target_id=target, amount=amount, idempotency_key=uuid.uuid4().hex
    )


def raw_transfer(conn_state, source: int, target: int, amount: Decimal) -> None:
    conn = conn_state["raw"]
    with conn.transaction():
        rows = conn.execute(
            "SELECT id, balance FROM accounts_account WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
            [sorted({source, target})],
        ).fetchall()
        balances = dict(rows)
        if balances[source] < amount:
            raise InsufficientFundsRaw()
        conn.execute(
            "UPDATE accounts_account SET balance = balance - %s WHERE id = %s", [amount, source]
        )
        conn.execute(
            "UPDATE accounts_account SET balance = balance + %s WHERE id = %s", [amount, target]
        )
        transfer_id = conn.execute(
            "INSERT INTO accounts_transfer (source_id, target_id, amount, memo, created_at)"
            " VALUES (%s, %s, %s, '', now()) RETURNING id",
            [source, target, amount],
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO accounts_ledgerentry (account_id, transfer_id, amount, balance_after, created_at)"
            " VALUES (%s, %s, %s, %s, now()), (%s, %s, %s, %s, now())",
            [
                source,
                transfer_id,
                -amount,
                balances[source] - amount,
                target,
                transfer_id,
                amount,
                balances[target] + amount,
            ],
        )


def naive_transfer(conn_state, source: int, target: int, amount: Decimal) -> None:
    from accounts.models import Account, LedgerEntry, Transfer

    src = Account.objects.get(pk=source)
    dst = Account.objects.get(pk=target)
    if src.balance < amount:
        raise InsufficientFundsRaw()
    src.balance -= amount
    dst.balance += amount
    src.save(update_fields=["balance"])
    dst.save(update_fields=["balance"])
    transfer = Transfer.objects.create(source=src, target=dst, amount=amount)
    LedgerEntry.objects.bulk_create(
        [
            LedgerEntry(account=src, transfer=transfer, amount=-amount, balance_after=src.balance),
            LedgerEntry(account=dst, transfer=transfer, amount=amount, balance_after=dst.balance),
        ]
    )


class InsufficientFundsRaw(Exception):
    pass


def run(impl, ids: list[int], threads: int, seconds: float, raw_url: str) -> dict:
    import psycopg
    from django.db import DatabaseError

    from accounts.exceptions import InsufficientFunds

    @contextmanager
    def worker(i: int):
        rng = random.Random(1000 + i)
        state = {"raw": psycopg.connect(raw_url, autocommit=True) if impl is raw_transfer else None}

        def transfer() -> None:
            source, target = rng.sample(ids, 2)
            impl(state, source, target, Decimal(rng.randint(1, 500)) / 100)

        try:
            yield transfer
        finally:
            if state["raw"] is not None:
                state["raw"].close()

    return threads_for(
        threads,
        seconds,
        worker,
        refused=(InsufficientFunds, InsufficientFundsRaw),
        errors=(DatabaseError, psycopg.Error),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5, help="measured time per run")
    parser.add_argument(
        "--accounts", type=int, default=100_000, help="accounts in the uniform case"
    )
    parser.add_argument("--hot", type=int, default=10, help="accounts in the contended case")
    args = parser.parse_args()

    with embedded.temporary_server(settings={"max_connections": "100"}) as server:
        os.environ["DATABASE_URL"] = server.socket_url()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
        import django

        django.setup()
        counter = LogCounter("dbops.retry", logging.INFO)

        ids = populate(args.accounts)
        impls = [
            ("(b) raw psycopg", raw_transfer),
            ("(a) transfer_create", service_transfer),
            ("(c) naive save()", naive_transfer),
        ]
        rows = []
        for label_dist, pool_ids in (
            (f"{args.accounts:,} accounts", ids),
            (f"{args.hot} hot accounts", ids[: args.hot]),
        ):
            floor = {}
            for label, impl in impls:
                for threads in THREADS:
                    reset(args.accounts)
                    counter.count = 0
                    result = run(impl, pool_ids, threads, args.seconds, server.socket_url())
                    drift, mismatched = invariants(args.accounts)
                    rate = result["done"] / args.seconds
                    if impl is raw_transfer:
                        floor[threads] = rate
                    ratio = f"{rate / floor[threads]:.2f}x" if floor.get(threads) else "-"
                    rows.append(
                        [
                            label_dist,
                            label,
                            threads,
                            rate,
                            percentile(result["latencies"], 50),
                            percentile(result["latencies"], 99),
                            ratio,
                            counter.count,
                            result["errors"],
                            f"{drift:+}",
                            mismatched,
                        ]
                    )
                    print(
                        f"{label_dist} {label} x{threads}: {rate:.0f}/s drift {drift} mismatched {mismatched}",
                        file=sys.stderr,
                    )
        version = server.url()

    headers = [
        "accounts",
        "implementation",
        "threads",
        "transfers/s",
        "p50 ms",
        "p99 ms",
        "vs (b)",
        "retries",
        "errors",
        "money created (+) / destroyed (-)",
        "balances != ledger",
    ]
    body = (
        f"{args.seconds:g} s per run; every run starts from the same state (all balances {OPENING}); "
        f"amounts 0.01-5.00 between random pairs; PostgreSQL 18 (embedded) over a unix socket. "
        f"Refused transfers (insufficient funds) are not counted.\n\n" + table(headers, rows)
    )
    del version
    write_results(
        "transfers", "Transfers: service vs raw psycopg vs naive ORM", "bench/transfers.py", body
    )


if __name__ == "__main__":
    main()
