"""Read replica: the router on and off, read-your-writes under random replay pauses, failover time.

In one run, against a throwaway PostgreSQL 18 primary and a streaming hot standby of it (built with
``pg_basebackup``, as ``embedded_db start --replica`` does), in-process requests through the full
middleware stack:

1. a read-heavy page mix (orders list, catalog, a product, accounts, transfers) from logged-in clients in
   threads for a fixed time, with the router off (no ``replica`` alias) and on: requests/s, p50,
   p99, and the share of queries the replica served (``X-DB-Replica-Query-Count`` over
   ``X-DB-Query-Count``);
2. read-your-writes: N edits, each followed at once by a read of the edited page, while a thread
   pauses and resumes the standby's replay at random: stale reads (must be 0), and how many of the
   reads the replica served; then the same with the WAL position not remembered (what happens
   without read-your-writes);
3. failover: a client requesting pages in a loop while the standby is stopped (immediate mode):
   the time from the stop to the first request served from the primary, and the errors seen.

Writes bench/results/replica.md.

    .venv/bin/python bench/replica.py [--seconds 10] [--threads 4] [--writes 300]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, table, threads_for, write_results  # noqa: E402
from devdb import embedded  # noqa: E402


def replica_on(standby) -> None:
    from django.db import connections

    from dbops import routing

    connections.settings[routing.replica_alias()] = {
        **connections.settings["default"],
        "HOST": str(standby.socket_dir),
        "PORT": str(standby.port),
    }
    routing.monitor.reset()


def replica_off() -> None:
    from django.db import connections

    from dbops import routing

    if routing.replica_alias() in connections.settings:
        connections[routing.replica_alias()].close()
        del connections[routing.replica_alias()]
        del connections.settings[routing.replica_alias()]


def standby_sql(standby, sql: str):
    import psycopg

    with psycopg.connect(standby.socket_url("app"), autocommit=True) as conn:
        return conn.execute(sql).fetchone()


def catch_up(standby) -> None:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True) as primary:
        lsn = primary.execute("SELECT pg_current_wal_flush_lsn()").fetchone()[0]
    with psycopg.connect(standby.socket_url("app"), autocommit=True) as conn:
        while not conn.execute("SELECT pg_last_wal_replay_lsn() >= %s", [lsn]).fetchone()[0]:
            time.sleep(0.005)


def dataset():
    from django.contrib.auth import get_user_model

    from accounts.models import Account
    from orders.demo import customers_seed, orders_seed, products_seed
    from orders.models import Product
    from orders.services import customer_create

    products_seed(60)
    customers_seed(200)
    orders_seed(1000)
    users = []
    for i in range(8):
        user = get_user_model().objects.create_user(f"bench-reader-{i}", password="x")
        customer_create(user=user, name=f"Reader {i}", email=f"r{i}@bench.example", region="north")
        Account.objects.create(owner=user, name=f"Account {i}", currency="EUR")
        users.append(user)
    product = Product.objects.order_by("pk").first()
    paths = [
        "/orders/",
        "/orders/products/",
        f"/orders/products/{product.pk}/",
        "/accounts/",
        "/accounts/transfers/",
    ]
    return users, paths, product


def client_for(user):
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def mix_section(users, paths, standby, seconds: float, threads: int) -> str:
    rows = []
    # Off, on, off again: the second "off" shows how much the machine drifted during the run.
    configs = (
        ("router off: every query on the primary", False),
        ("router on", True),
        ("router off again", False),
    )
    for label, on in configs:
        replica_off()
        if on:
            catch_up(standby)
            replica_on(standby)
        counts = [[0, 0] for _ in range(threads)]  # queries, replica queries

        @contextmanager
        def worker(i, counts=counts):
            client = client_for(users[i % len(users)])
            cycle = itertools.cycle(paths)

            def operation():
                response = client.get(next(cycle))
                assert response.status_code == 200, response.status_code
                counts[i][0] += int(response["X-DB-Query-Count"])
                counts[i][1] += int(response["X-DB-Replica-Query-Count"])

            yield operation

        result = threads_for(threads, seconds, worker)
        flat = result["latencies"]
        queries = sum(c[0] for c in counts)
        on_replica = sum(c[1] for c in counts)
        rows.append(
            [
                label,
                result["done"] / seconds,
                percentile(flat, 50),
                percentile(flat, 99),
                queries,
                f"{on_replica / queries:.0%}",
            ]
        )
        print(rows[-1], file=sys.stderr)
    replica_off()
    baseline = rows[0][1]
    for row in rows:
        row.insert(2, f"{row[1] / baseline:.2f}x")
    return table(
        [
            "configuration",
            "requests/s",
            "vs off",
            "p50 ms",
            "p99 ms",
            "queries",
            "served by the replica",
        ],
        rows,
    )


@contextmanager
def random_replay_pauses(standby, stop: threading.Event):
    """Pause and resume the standby's replay at random (0-50 ms each way) until ``stop``."""
    rng = random.Random(7)
    pauses = [0]

    def toggle():
        while not stop.is_set():
            standby_sql(standby, "SELECT pg_wal_replay_pause()")
            pauses[0] += 1
            stop.wait(rng.uniform(0, 0.05))
            standby_sql(standby, "SELECT pg_wal_replay_resume()")
            stop.wait(rng.uniform(0, 0.05))

    thread = threading.Thread(target=toggle)
    thread.start()
    try:
        yield pauses
    finally:
        stop.set()
        thread.join()
        standby_sql(standby, "SELECT pg_wal_replay_resume()")


def ryw_trial(user, standby, writes: int, *, remember: bool) -> list:
    from accounts.models import Account
    from dbops import routing

    account = Account.objects.get(owner=user)
    client = client_for(user)
    stale = on_replica = 0
    original = routing.remember_writes
    if not remember:
        routing.remember_writes = lambda state: None
    stop = threading.Event()
    try:
        with random_replay_pauses(standby, stop) as pauses:
            for i in range(writes):
                name = f"Edit {i} {remember}"
                response = client.post(
                    f"/accounts/{account.pk}/edit/", {"name": name, "version": account.version}
                )
                assert response.status_code in (302, 409), response.status_code
                account.refresh_from_db()
                page = client.get(f"/accounts/{account.pk}/edit/")
                # The form's value, not the "saved" message (which comes from the session).
                if f'value="{name}"'.encode() not in page.content:
                    stale += 1
                if int(page["X-DB-Replica-Query-Count"]) > 1:  # more than the position check
                    on_replica += 1
    finally:
        routing.remember_writes = original
    label = "read-your-writes (WAL position in the session)" if remember else "position not kept"
    return [label, writes, pauses[0], stale, on_replica]


def ryw_section(users, standby, writes: int) -> str:
    catch_up(standby)
    replica_on(standby)
    rows = [
        ryw_trial(users[0], standby, writes, remember=True),
        ryw_trial(users[1], standby, writes, remember=False),
    ]
    replica_off()
    return table(
        [
            "trial",
            "write then read",
            "replay pauses",
            "stale reads",
            "reads served by the replica",
        ],
        rows,
    )


def failover_section(users, paths, standby) -> str:
    catch_up(standby)
    replica_on(standby)
    client = client_for(users[2])
    for _ in range(20):
        assert int(client.get(paths[0])["X-DB-Replica-Query-Count"]) > 0
    errors = 0
    embedded.stop(standby.pgdata, mode="immediate")
    stopped = time.perf_counter()  # the standby is gone (pg_ctl waited for it)
    served = None
    requests = 0
    while served is None:
        response = client.get(paths[0])
        requests += 1
        if response.status_code != 200:
            errors += 1
        elif response["X-DB-Replica-Query-Count"] == "0":
            served = (time.perf_counter() - stopped) * 1000
    replica_off()
    from dbops import routing

    return table(
        ["event", "first request served from the primary after", "requests", "5xx", "health"],
        [
            [
                "standby stopped (immediate) under a client",
                f"{served:.1f} ms",
                requests,
                errors,
                routing.monitor.health.reason,
            ]
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="measured time per mix run")
    parser.add_argument("--threads", type=int, default=4, help="client threads in the mix")
    parser.add_argument("--writes", type=int, default=300, help="writes in each trial")
    args = parser.parse_args()

    with embedded.temporary_server() as primary:
        standby = embedded.replica_start(primary)
        os.environ["DATABASE_URL"] = primary.socket_url()
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        users, paths, _ = dataset()
        mix = mix_section(users, paths, standby, args.seconds, args.threads)
        ryw = ryw_section(users, standby, args.writes)
        print(ryw, file=sys.stderr)
        failover = failover_section(users, paths, standby)
        embedded.replica_stop(primary.pgdata)

    body = (
        "In-process requests through the full middleware stack (DEBUG off), PostgreSQL 18 primary "
        "and a streaming hot standby on unix sockets, both on the benchmark's machine: the replica "
        "adds no capacity here, so the table shows where queries go, not a speed-up.\n\n"
        f"## A read-heavy page mix, {args.threads} client threads, {args.seconds:g} s each\n\n"
        f"Pages: {', '.join(paths)} in turn, each client logged in.\n\n{mix}\n\n"
        "## Read-your-writes under random replay pauses\n\n"
        "Each write (an account rename) is followed at once by a read of the same account's page "
        "by the same user, while replay on the standby is paused and resumed at random (0-50 ms "
        "each way). A read is stale when its form does not hold the name just saved. Reads served "
        "by the replica: more than the one query that checks its replay position.\n\n"
        f"{ryw}\n\n## Replica failure\n\n{failover}\n"
    )
    write_results("replica", "Read replica", "bench/replica.py", body)


if __name__ == "__main__":
    main()
