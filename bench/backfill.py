"""Backfill: ``backfill_column`` at several settings vs one single UPDATE, with application writes
timed throughout and ``pg_stat_activity`` wait events sampled for the writer and the backfill.

On a customers table of 2,000,000 rows (default) on a throwaway PostgreSQL, in one run, each
configuration of ``backfill_column orders.Customer email_normalized --expression
"lower(btrim(email))"`` (the column reset and the table vacuumed between runs), then
``UPDATE orders_customer SET email_normalized = lower(btrim(email))``. A writer in a process of its
own updates one random row every 5 ms and times each write. A sampler reads ``pg_stat_activity``
every 20 ms: what the writer's backend waits on while a write is in flight, and what the backfill's
backend is doing (working, waiting on what, or waiting for the client). Reports rows/s, the ratio
to the single UPDATE, the longest batch, the throttle's pauses, the writer's p50/p99/max, and the
wait-event shares. Writes bench/results/backfill.md.

    .venv/bin/python bench/backfill.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, table, write_results  # noqa: E402
from bench.dataset import customers_populate, django_setup  # noqa: E402
from devdb import embedded  # noqa: E402

EXPRESSION = "lower(btrim(email))"
SINGLE_UPDATE = "UPDATE orders_customer SET email_normalized = lower(btrim(email)) WHERE email_normalized IS NULL"
WRITER, BACKFILL = "bench-writer", "bench-backfill"
SAMPLE_S = 0.02


@dataclass(frozen=True)
class Config:
    label: str
    target_batch_ms: float = 50
    synchronous_commit: bool = True
    sleep: float = 0.0


CONFIGS = [
    Config("target 50 ms, synchronous_commit on (the old default)", 50, True),
    Config("target 50 ms, synchronous_commit off", 50, False),
    Config("target 20 ms, synchronous_commit on", 20, True),
    Config("target 20 ms, synchronous_commit off", 20, False),
    Config("target 100 ms, synchronous_commit off", 100, False),
    Config("target 200 ms, synchronous_commit on", 200, True),
    Config("target 200 ms, synchronous_commit off", 200, False),
    Config("target 50 ms, synchronous_commit off, sleep 10 ms", 50, False, 0.01),
]


def _write_loop(url: str, max_id: int, pace_s: float, stop, results) -> None:
    """In a process of its own (no interpreter lock shared with the backfill): single-row
    UPDATEs of random customers, paced, each timed."""
    import psycopg

    rng = random.Random(5)
    samples = []
    with psycopg.connect(url, autocommit=True, application_name=WRITER) as conn:
        while not stop.is_set():
            customer_id = rng.randint(1, max_id)
            started = time.monotonic()
            conn.execute("UPDATE orders_customer SET region = region WHERE id = %s", [customer_id])
            samples.append((started, (time.monotonic() - started) * 1000))
            time.sleep(pace_s)
    results.put(samples)


@dataclass
class Observed:
    seconds: float
    writes: list[float]
    writer_waits: Counter = field(default_factory=Counter)
    backfill_waits: Counter = field(default_factory=Counter)
    result: object = None


def _sample(url: str, stop: threading.Event, writer: Counter, backfill: Counter) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            for name, state, kind, event in conn.execute(
                "SELECT application_name, state, wait_event_type, wait_event FROM pg_stat_activity"
                " WHERE application_name IN (%s, %s)",
                [WRITER, BACKFILL],
            ):
                if name == WRITER and state == "active":
                    writer[f"{kind}:{event}" if event else "CPU"] += 1
                elif name == BACKFILL:
                    backfill[_backfill_state(state, kind, event)] += 1
            time.sleep(SAMPLE_S)


def _backfill_state(state: str, kind: str | None, event: str | None) -> str:
    if state == "active":
        return f"{kind}:{event}" if event else "CPU"
    if state == "idle in transaction":
        return "client, inside a batch"
    return "client, between batches"


def observed(url: str, max_id: int, work) -> Observed:
    """Run ``work()`` while a writer process updates rows and the sampler watches."""
    context = multiprocessing.get_context("spawn")
    stop, results = context.Event(), context.Queue()
    writer = context.Process(target=_write_loop, args=(url, max_id, 0.005, stop, results))
    writer.start()
    time.sleep(2)  # the writer's start and warm-up, outside the measured window
    sampling, writer_waits, backfill_waits = threading.Event(), Counter(), Counter()
    sampler = threading.Thread(target=_sample, args=(url, sampling, writer_waits, backfill_waits))
    sampler.start()
    started = time.monotonic()
    try:
        result = work()
    finally:
        ended = time.monotonic()
        sampling.set()
        sampler.join(10)
        stop.set()
        samples = results.get(timeout=60)
        writer.join(30)
    writes = [ms for at, ms in samples if started <= at <= ended]
    return Observed(ended - started, writes, writer_waits, backfill_waits, result)


def reset_column() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 0")
        cursor.execute("UPDATE orders_customer SET email_normalized = NULL")
    steady_state()


def steady_state() -> None:
    """The table vacuumed and a checkpoint taken before each run: WAL segments are then recycled
    rather than created (a fresh server creates and zero-fills a new 16 MB file for each, which a
    committing writer may have to wait for), as on a server that has been running a while."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE orders_customer")
        cursor.execute("CHECKPOINT")


def filled() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM orders_customer WHERE email_normalized = lower(btrim(email))"
        )
        return cursor.fetchone()[0]


def backfill_run(config: Config):
    from django.db import connection

    from dbops.backfill import BackfillOptions, Expression, backfill, plan_build

    plan = plan_build(
        BackfillOptions(
            model_label="orders.Customer",
            field_name="email_normalized",
            source=Expression(EXPRESSION),
            batch_size=1000,
            target_batch_ms=config.target_batch_ms,
            synchronous_commit=config.synchronous_commit,
            sleep=config.sleep,
            restart=True,
        )
    )
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("SET application_name = %s", [BACKFILL])
    return backfill(plan)


def single_update() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET application_name = %s", [BACKFILL])
        cursor.execute("SET statement_timeout = 0")
        cursor.execute(SINGLE_UPDATE)


def shares(counter: Counter, top: int) -> str:
    total = sum(counter.values())
    if not total:
        return "no samples"
    return ", ".join(f"{name} {n / total:.0%}" for name, n in counter.most_common(top))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()

    with embedded.temporary_server(
        settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
    ) as server:
        django_setup(server.socket_url())
        url = server.socket_url()
        print(f"populating {args.rows:,} customers...", file=sys.stderr)
        customers_populate(args.rows, migrate_to="0002")
        steady_state()
        runs: list[tuple[str, Observed]] = []
        for config in CONFIGS:
            print(f"backfill_column, {config.label}...", file=sys.stderr)
            runs.append((config.label, observed(url, args.rows, lambda c=config: backfill_run(c))))
            assert filled() == args.rows, "every row filled"
            reset_column()
        print("single UPDATE...", file=sys.stderr)
        runs.append(("single UPDATE", observed(url, args.rows, single_update)))
        assert filled() == args.rows, "every row filled"
    write_results(
        "backfill", "Backfill vs single UPDATE", "bench/backfill.py", report(args.rows, runs)
    )


def report(rows: int, runs: list[tuple[str, Observed]]) -> str:
    from dbops.backfill import BackfillOptions

    single = runs[-1][1]
    speed = []
    waits = []
    for label, o in runs:
        run = o.result
        pauses = ", ".join(
            f"{k.replace('_', ' ')} {v['count']}x {v['seconds']:.1f} s"
            for k, v in sorted(getattr(run, "pauses", {}).items())
        )
        speed.append(
            [
                label,
                f"{o.seconds:.1f}",
                rows / o.seconds,
                f"{single.seconds / o.seconds:.2f}x",
                f"{run.batches:,}" if run else "1",
                f"{run.longest_batch_ms:.0f}" if run else f"{o.seconds * 1000:.0f}",
                pauses or "none",
                len(o.writes),
                percentile(o.writes, 50),
                percentile(o.writes, 99),
                max(o.writes, default=float("nan")),
                f"{sum(1 for w in o.writes if w > 10) / max(len(o.writes), 1):.2%}",
            ]
        )
        waits.append([label, shares(o.writer_waits, 4), shares(o.backfill_waits, 5)])
    default = BackfillOptions
    return (
        f'{rows:,} customers, `--expression "{EXPRESSION}"`; a writer in its own process '
        "updates one random row every 5 ms throughout, each write timed; `pg_stat_activity` "
        f"sampled every {SAMPLE_S * 1000:.0f} ms. PostgreSQL 18 (embedded). Defaults now: target "
        f"{default.target_batch_ms:g} ms, synchronous_commit "
        f"{'on' if default.synchronous_commit else 'off'}, sleep {default.sleep:g} s.\n\n"
        + table(
            [
                "method",
                "seconds",
                "rows/s",
                "vs single UPDATE",
                "batches",
                "longest batch ms",
                "throttle pauses",
                "writes",
                "writer p50 ms",
                "writer p99 ms",
                "writer max ms",
                "writes over 10 ms",
            ],
            speed,
        )
        + "\n\nWhat the backends waited on (share of samples): the writer's while a write was in "
        'flight; the backfill\'s throughout ("client": the backend waited for the command).\n\n'
        + table(["method", "writer, during a write", "backfill"], waits)
        + "\n"
    )


if __name__ == "__main__":
    main()
