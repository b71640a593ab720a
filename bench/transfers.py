"""The money path: ``transfer_create`` and ``order_place`` against psycopg doing the same work.

For 1 thread, 4 threads and 4 processes (one thread each: no interpreter lock shared), each for a
fixed time, in one run against a throwaway PostgreSQL on this machine:

- raw psycopg (``bench/raw.py``): the fair baseline, statement for statement the service's work
  (lock timeout, locks in id order, idempotency lookup under the lock, actor, checks, retry loop,
  every column), with psycopg's defaults: server-side binding, statements prepared after 5 runs;
- the service with ``DB_PREPARE_THRESHOLD=5`` (server-side binding, prepared after 5 runs);
- the service with Django's default (client-side binding, nothing prepared).

Transfers run over 100,000 accounts (little contention) and over 10 hot accounts (heavy
contention); orders of 1 to 3 lines over 1,000 products and 1,000 customers. Next to the
throughput: the database server's CPU per operation (the CPU time of each worker's backend,
``pg_backend_pid()``, from /proc) and the client's CPU per operation. Every run starts from the
same state and ends with the invariants checked: money conserved, every balance equal to its
ledger, no duplicate idempotency key; for orders, stock taken equal to the items sold, every order
paid once for its total, no duplicate key. A last table shows what the guarantees buy: a naive
read-modify-``save()`` transfer on the hot accounts. Writes bench/results/transfers.md.

    .venv/bin/python bench/transfers.py [--seconds 3] [--rounds 4] [--accounts 100000]
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

from bench import raw  # noqa: E402
from bench.common import (  # noqa: E402
    LogCounter,
    backend_cpu_seconds,
    percentile,
    processes_for,
    table,
    threads_for,
    write_results,
)
from devdb import embedded  # noqa: E402

OPENING = Decimal("1000.00")
STOCK = 1_000_000_000
CONCURRENCY = (("1 thread", threads_for, 1), ("4 threads", threads_for, 4))
CONCURRENCY += (("4 processes", processes_for, 4),)
PREPARE_THRESHOLD = "5"


def prepared_statements(url: str, threshold: str | None) -> None:
    """New connections from here on use the OPTIONS ``DB_PREPARE_THRESHOLD=threshold`` gives."""
    from django.db import connections

    from config.database import database_settings

    environ = {"DATABASE_URL": url, **({"DB_PREPARE_THRESHOLD": threshold} if threshold else {})}
    connections.close_all()
    connections.settings["default"]["OPTIONS"] = database_settings(environ)["default"]["OPTIONS"]


def sql(statement: str, params=()) -> list[tuple]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def vacuum(*tables: str) -> None:
    from django.db import connection

    connection.close()
    for name in tables:
        sql(f"VACUUM ANALYZE {name}")


# Transfers


def accounts_populate(accounts: int) -> tuple[list[int], object]:
    from django.contrib.auth import get_user_model

    owner, _ = get_user_model().objects.get_or_create(username="bench")
    sql("TRUNCATE accounts_ledgerentry, accounts_transfer, accounts_account CASCADE")
    sql(
        "INSERT INTO accounts_account (owner_id, name, currency, balance, version, created_at)"
        " SELECT %s, 'bench ' || g, 'EUR', %s, 1, now() FROM generate_series(1, %s) g",
        [owner.pk, OPENING, accounts],
    )
    return [row[0] for row in sql("SELECT id FROM accounts_account ORDER BY id")], owner


def accounts_reset() -> None:
    """Every run starts here: all balances OPENING, one opening ledger entry each, no transfers."""
    sql("TRUNCATE accounts_ledgerentry, accounts_transfer")
    sql("UPDATE accounts_account SET balance = %s, version = 1 WHERE balance <> %s", [OPENING] * 2)
    sql(
        "INSERT INTO accounts_ledgerentry (account_id, amount, balance_after, created_at)"
        " SELECT id, %s, %s, now() FROM accounts_account",
        [OPENING, OPENING],
    )
    vacuum("accounts_account", "accounts_ledgerentry")


def accounts_check(accounts: int) -> list:
    """[money created (+) or destroyed (-), balances != ledger, duplicate idempotency keys]."""
    drift = sql("SELECT sum(balance) FROM accounts_account")[0][0] - OPENING * accounts
    mismatched = sql(
        "SELECT count(*) FROM accounts_account a LEFT JOIN (SELECT account_id, sum(amount) AS s"
        " FROM accounts_ledgerentry GROUP BY account_id) l ON l.account_id = a.id"
        " WHERE a.balance <> coalesce(l.s, 0)"
    )[0][0]
    duplicates = sql(
        "SELECT count(*) FROM (SELECT 1 FROM accounts_transfer WHERE idempotency_key IS NOT NULL"
        " GROUP BY source_id, idempotency_key HAVING count(*) > 1) d"
    )[0][0]
    return [f"{drift:+}", mismatched, duplicates]


def transfer_operation(kind: str, ids: list[int], owner, rng: random.Random, conn=None):
    from accounts.services import transfer_create

    def operation() -> None:
        source, target = rng.sample(ids, 2)
        amount = Decimal(rng.randint(1, 500)) / 100
        key = uuid.uuid4().hex
        if kind == "raw":
            raw.transfer(
                conn,
                source_id=source,
                target_id=target,
                amount=amount,
                idempotency_key=key,
                actor_id=owner.pk,
            )
        elif kind == "naive":
            naive_transfer(source, target, amount)
        else:
            transfer_create(
                source_id=source, target_id=target, amount=amount, idempotency_key=key, actor=owner
            )

    return operation


def naive_transfer(source: int, target: int, amount: Decimal) -> None:
    """Read, change in Python, save(): no transaction, no lock."""
    from accounts.models import Account, LedgerEntry, Transfer

    src = Account.objects.get(pk=source)
    dst = Account.objects.get(pk=target)
    if src.balance < amount:
        raise raw.Refused("insufficient funds")
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


# Orders


def orders_populate(products: int, customers: int) -> tuple[list[int], list[int]]:
    sql("TRUNCATE orders_payment, orders_orderitem, orders_order, orders_product CASCADE")
    sql("DELETE FROM orders_customer WHERE email LIKE 'bench-%%'")
    sql(
        "INSERT INTO orders_product (sku, name, price, stock, version)"
        " SELECT 'BENCH-' || g, 'Product ' || g, (g %% 50) + 0.99, %s, 1"
        " FROM generate_series(1, %s) g",
        [STOCK, products],
    )
    sql(
        "INSERT INTO orders_customer (name, email, email_normalized, region)"
        " SELECT 'Customer ' || g, 'bench-' || g || '@example.com',"
        " 'bench-' || g || '@example.com', 'north' FROM generate_series(1, %s) g",
        [customers],
    )
    product_ids = [row[0] for row in sql("SELECT id FROM orders_product ORDER BY id")]
    customer_ids = [
        row[0] for row in sql("SELECT id FROM orders_customer WHERE email LIKE 'bench-%%'")
    ]
    return product_ids, customer_ids


def orders_reset() -> None:
    sql("TRUNCATE orders_payment, orders_orderitem, orders_order")
    sql("UPDATE orders_product SET stock = %s, version = 1", [STOCK])
    vacuum("orders_product", "orders_order")


def orders_check() -> list:
    """[products whose stock != what was sold, orders not paid once for their total, duplicate keys]."""
    stock = sql(
        "SELECT count(*) FROM orders_product p LEFT JOIN (SELECT product_id, sum(quantity) AS q"
        " FROM orders_orderitem GROUP BY product_id) i ON i.product_id = p.id"
        " WHERE p.stock <> %s - coalesce(i.q, 0)",
        [STOCK],
    )[0][0]
    unpaid = sql(
        "SELECT count(*) FROM orders_order o WHERE o.status <> 'paid'"
        " OR o.total <> (SELECT coalesce(sum(quantity * unit_price), 0) FROM orders_orderitem"
        " WHERE order_id = o.id) OR (SELECT count(*) FROM orders_payment WHERE order_id = o.id"
        " AND amount = o.total AND reference <> '') <> 1"
    )[0][0]
    duplicates = sql(
        "SELECT count(*) FROM (SELECT 1 FROM orders_order WHERE idempotency_key IS NOT NULL"
        " GROUP BY customer_id, idempotency_key HAVING count(*) > 1) d"
    )[0][0]
    return [stock, unpaid, duplicates]


def order_operation(kind: str, ids: tuple[list[int], list[int]], rng: random.Random, conn=None):
    from orders.payments import SimulatedGateway
    from orders.services import order_place

    product_ids, customer_ids = ids
    gateway = SimulatedGateway(decline=set())

    def operation() -> None:
        lines = [(pid, rng.randint(1, 3)) for pid in rng.sample(product_ids, rng.randint(1, 3))]
        customer = rng.choice(customer_ids)
        key = uuid.uuid4().hex
        if kind == "raw":
            raw.order(conn, customer_id=customer, lines=lines, idempotency_key=key, gateway=gateway)
        else:
            order_place(customer_id=customer, lines=lines, idempotency_key=key, gateway=gateway)
        gateway.charges.clear()

    return operation


# Running


def worker_factory(kind: str, url: str, meter: list, make_operation):
    """``worker(i)`` for the harness: the thread's connection (Django's, or its own psycopg one for
    the raw baseline) and the CPU its backend used while the worker ran, added to ``meter``."""
    import psycopg

    @contextmanager
    def worker(i: int):
        from django.db import connection

        rng = random.Random(1000 + i)
        conn = None
        if kind == "raw":
            conn = psycopg.connect(url, autocommit=True)
            pid = conn.info.backend_pid
        else:
            connection.ensure_connection()
            pid = connection.connection.info.backend_pid
        before = backend_cpu_seconds(pid)
        try:
            yield make_operation(rng, conn)
        finally:
            meter.append(backend_cpu_seconds(pid) - before)
            if conn is not None:
                conn.close()

    return worker


def measure(kind, url, make_operation, run, n, seconds, counter) -> dict:
    import psycopg
    from django.db import DatabaseError

    from core.exceptions import DomainError

    meter: list[float] = []
    counter.count = 0
    options = {"refused": (DomainError, raw.Refused), "errors": (DatabaseError, psycopg.Error)}
    worker = worker_factory(kind, url, meter, make_operation)
    if run is processes_for:
        result = run(n, seconds, worker, collect=lambda: (sum(meter), counter.count), **options)
        result["server_cpu"] = sum(c[0] for c in result["collected"])
        result["retries"] = sum(c[1] for c in result["collected"])
    else:
        result = run(n, seconds, worker, **options)
        result["server_cpu"], result["retries"] = sum(meter), counter.count
    return result


IMPLEMENTATIONS = (
    ("raw psycopg (prepared after 5)", "raw", None),
    (f"service, DB_PREPARE_THRESHOLD={PREPARE_THRESHOLD}", "service", PREPARE_THRESHOLD),
    ("service, prepare off (default)", "service", None),
)


def row_for(label, what, result, seconds, floor) -> list:
    done = max(result["done"], 1)
    rate = result["done"] / seconds
    server_ms = result["server_cpu"] * 1000 / done
    floor.setdefault(what, (rate, server_ms))
    raw_rate, raw_server_ms = floor[what]
    return [
        label,
        what,
        rate,
        percentile(result["latencies"], 50),
        percentile(result["latencies"], 99),
        f"{rate / raw_rate:.2f}x",
        server_ms,
        f"{server_ms / raw_server_ms:.2f}x",
        result["client_cpu"] * 1000 / done,
        result["retries"],
        result["errors"],
    ]


def merged(total: dict | None, result: dict, checks: list) -> dict:
    """The rounds of one implementation at one concurrency, added up."""
    result = {**result, "checks": [checks]}
    if total is None:
        return result
    for key in ("done", "refused", "errors", "client_cpu", "server_cpu", "retries"):
        total[key] += result[key]
    total["latencies"] += result["latencies"]
    total["checks"] += result["checks"]
    return total


def worst(checks: list[list]) -> list:
    """Per invariant over the rounds: the largest drift of money, the sum of the counts."""
    columns = []
    for values in zip(*checks, strict=True):
        if isinstance(values[0], str):
            columns.append(max(values, key=lambda v: abs(Decimal(v))))
        else:
            columns.append(sum(values))
    return columns


def series(url, args, counter, reset, check, make_operation) -> list[list]:
    """Every implementation at every concurrency, invariants checked after every run.

    The implementations take turns, round after round (in a rotating order), so that load from
    elsewhere on a shared machine falls on all of them alike; each row adds up its rounds.
    """
    rows = []
    for what, run, n in CONCURRENCY:
        totals: dict[str, dict | None] = dict.fromkeys(label for label, _, _ in IMPLEMENTATIONS)
        for round_ in range(args.rounds):
            turn = IMPLEMENTATIONS[round_ % 3 :] + IMPLEMENTATIONS[: round_ % 3]
            for label, kind, threshold in turn:
                prepared_statements(url, threshold)
                reset()
                result = measure(kind, url, make_operation(kind), run, n, args.seconds, counter)
                totals[label] = merged(totals[label], result, check())
        floor: dict = {}
        for label, _, _ in IMPLEMENTATIONS:
            total = totals[label]
            seconds = args.seconds * args.rounds
            rows.append(row_for(label, what, total, seconds, floor) + worst(total["checks"]))
            print(" | ".join(str(x) for x in rows[-1]), file=sys.stderr)
    prepared_statements(url, None)
    return rows


HEADERS = [
    "implementation",
    "concurrency",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "vs raw",
    "server CPU ms/op",
    "server CPU vs raw",
    "client CPU ms/op",
    "retries",
    "errors",
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3, help="measured time per run")
    parser.add_argument(
        "--rounds", type=int, default=4, help="runs of each implementation, taking turns"
    )
    parser.add_argument("--accounts", type=int, default=100_000, help="accounts, uniform case")
    parser.add_argument("--hot", type=int, default=10, help="accounts in the contended case")
    parser.add_argument("--products", type=int, default=1000, help="products for orders")
    args = parser.parse_args()

    with embedded.temporary_server(settings={"max_connections": "100"}) as server:
        url = server.socket_url()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        counter = LogCounter("dbops.retry", logging.INFO)
        tables = run_all(args, url, counter)

    write_results(
        "transfers",
        "The money path: services vs the same work in raw psycopg",
        "bench/transfers.py",
        body(args, tables),
    )


def run_all(args, url: str, counter) -> dict[str, list[list]]:
    ids, owner = accounts_populate(args.accounts)
    tables = {}
    for name, pool in (
        (f"{args.accounts:,} accounts", ids),
        (f"{args.hot} hot accounts", ids[: args.hot]),
    ):
        tables[name] = series(
            url,
            args,
            counter,
            accounts_reset,
            lambda: accounts_check(args.accounts),
            lambda kind, pool=pool: (
                lambda rng, conn: transfer_operation(kind, pool, owner, rng, conn)
            ),
        )
    order_ids = orders_populate(args.products, 1000)
    tables["orders"] = series(
        url,
        args,
        counter,
        orders_reset,
        orders_check,
        lambda kind: lambda rng, conn: order_operation(kind, order_ids, rng, conn),
    )
    naive = []
    for what, run, n in CONCURRENCY[:2]:
        accounts_reset()
        make = lambda rng, conn: transfer_operation("naive", ids[: args.hot], owner, rng, conn)  # noqa: E731
        result = measure("naive", url, make, run, n, args.seconds, counter)
        naive.append([what, result["done"] / args.seconds, *accounts_check(args.accounts)])
    tables["naive"] = naive
    return tables


def body(args, tables: dict[str, list[list]]) -> str:
    transfer_checks = ["money created (+) / destroyed (-)", "balances != ledger", "duplicate keys"]
    order_checks = ["stock != items sold", "orders not paid once for their total", "duplicate keys"]
    text = (
        f"{args.rounds} rounds of {args.seconds:g} s per row, the implementations taking turns "
        "(rotating order) so load from elsewhere falls on all alike; PostgreSQL 18 (embedded, same machine) over a unix socket; "
        "client and server share the machine's cores, so compare ratios within this run. "
        "Server CPU: the CPU time of each worker's backend process "
        "(/proc/<pg_backend_pid()>/schedstat) over the run, per operation completed; client CPU: "
        "the benchmark process(es), per operation. Refused operations (insufficient funds) are "
        "not counted.\n\n"
    )
    for name, rows in tables.items():
        if name == "naive":
            continue
        if name == "orders":
            text += f"## order_place, 1 to 3 lines over {args.products:,} products\n\n"
            text += table(HEADERS + order_checks, rows) + "\n\n"
        else:
            text += f"## transfer_create, {name}\n\n" + table(HEADERS + transfer_checks, rows)
            text += "\n\n"
    text += f"## What the guarantees buy: a naive read-modify-save() transfer, {args.hot} hot accounts\n\n"
    text += table(["concurrency", "ops/s"] + transfer_checks, tables["naive"]) + "\n"
    return text


if __name__ == "__main__":
    main()
