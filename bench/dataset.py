"""A large customers table on a throwaway server, and a writer that times single-row updates."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

from bench.common import percentile

_SELECT = (
    "SELECT 'Customer ' || g, ' Customer' || g || '@Example.com',"
    " (ARRAY['north','south','east','west'])[1 + g %% 4], now()"
)
# Before the contract migration (email_normalized still to fill) and after it (filled, NOT NULL).
INSERT_EXPANDED = (
    "INSERT INTO orders_customer (name, email, region, created_at) "
    + _SELECT
    + " FROM generate_series(1, %s) g"
)
INSERT_CONTRACTED = (
    "INSERT INTO orders_customer (name, email, region, created_at, email_normalized) "
    + _SELECT
    + ", 'customer' || g || '@example.com' FROM generate_series(1, %s) g"
)


def django_setup(socket_url: str) -> None:
    os.environ["DATABASE_URL"] = socket_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
    import django

    django.setup()


def customers_populate(rows: int, *, migrate_to: str | None = None) -> None:
    """``rows`` customers, inserted in SQL (the setup is not what is measured)."""
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    if migrate_to:
        call_command("migrate", "orders", migrate_to, verbosity=0)
    with connection.cursor() as cursor:
        # The setup is not measured: no statement timeout on a busy machine.
        cursor.execute("SET statement_timeout = 0")
        cursor.execute("TRUNCATE orders_customer CASCADE")
        cursor.execute(INSERT_EXPANDED if migrate_to else INSERT_CONTRACTED, [rows])
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE orders_customer")


class Writer(threading.Thread):
    """Single-row UPDATEs of random customers, paced, each timed; like application traffic."""

    def __init__(self, url: str, max_id: int, pace_s: float = 0.005):
        super().__init__(daemon=True)
        self.url, self.max_id, self.pace_s = url, max_id, pace_s
        self.samples: list[tuple[float, float]] = []  # (started at, ms)
        self.stopping = threading.Event()

    def run(self):
        import psycopg

        rng = random.Random(5)
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stopping.is_set():
                customer_id = rng.randint(1, self.max_id)
                started = time.monotonic()
                conn.execute(
                    "UPDATE orders_customer SET region = region WHERE id = %s", [customer_id]
                )
                self.samples.append((started, (time.monotonic() - started) * 1000))
                time.sleep(self.pace_s)

    def stop(self):
        self.stopping.set()
        self.join(60)

    def window(self, start: float, end: float) -> dict[str, float]:
        values = [ms for at, ms in self.samples if start <= at <= end]
        return {
            "writes": len(values),
            "p50": percentile(values, 50),
            "p99": percentile(values, 99),
            "max": max(values, default=float("nan")),
            "slow_share": sum(1 for v in values if v > 50) / len(values)
            if values
            else float("nan"),
        }


def under_writes(
    url: str, max_id: int, work: Callable[[], object]
) -> tuple[float, dict[str, float], object]:
    """Run ``work()`` while a Writer updates rows; (seconds, the writer's numbers during it, result)."""
    writer = Writer(url, max_id)
    writer.start()
    time.sleep(1)  # the writer's own warm-up, outside the measured window
    started = time.monotonic()
    try:
        result = work()
    finally:
        ended = time.monotonic()
        writer.stop()
    return ended - started, writer.window(started, ended), result
