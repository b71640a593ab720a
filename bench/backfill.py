"""Backfill: ``backfill_column`` vs one single UPDATE, with application writes timed throughout.

On a customers table of 2,000,000 rows (default) on a throwaway PostgreSQL, in one run:
(1) ``backfill_column orders.Customer email_normalized --expression "lower(btrim(email))"``;
(2) after resetting the column, ``UPDATE orders_customer SET email_normalized = lower(btrim(email))``.
A writer updates random single rows (every 5 ms) during both and times each write. Reports rows/s,
the ratio of (1) to (2), the longest batch, and the writer's p50/p99/max in each.
Writes bench/results/backfill.md.

    .venv/bin/python bench/backfill.py [--rows 2000000] [--target-batch-ms 50]
        [--other-target-batch-ms 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_results  # noqa: E402
from bench.dataset import customers_populate, django_setup, under_writes  # noqa: E402
from devdb import embedded  # noqa: E402

EXPRESSION = "lower(btrim(email))"
SINGLE_UPDATE = "UPDATE orders_customer SET email_normalized = lower(btrim(email)) WHERE email_normalized IS NULL"


def reset_column() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("UPDATE orders_customer SET email_normalized = NULL")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE orders_customer")


def filled() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM orders_customer WHERE email_normalized = lower(btrim(email))"
        )
        return cursor.fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument(
        "--target-batch-ms", type=float, default=None, help="default: the command's default"
    )
    parser.add_argument(
        "--other-target-batch-ms",
        type=float,
        default=200,
        help="a second run with another target (200: the default before issue 10)",
    )
    args = parser.parse_args()

    with embedded.temporary_server(
        settings={"max_wal_size": "4GB", "checkpoint_timeout": "30min"}
    ) as server:
        django_setup(server.socket_url())
        from django.db import connection

        from dbops.backfill import BackfillOptions, Expression, backfill, plan_build

        args.target_batch_ms = args.target_batch_ms or BackfillOptions.target_batch_ms

        print(f"populating {args.rows:,} customers...", file=sys.stderr)
        customers_populate(args.rows, migrate_to="0002")
        rows = []

        def row(label: str, seconds: float, w: dict, batches: str, longest_ms: float) -> list:
            assert filled() == args.rows, "every row filled"
            print(label, f"{seconds:.1f} s", w, file=sys.stderr)
            return [
                label,
                f"{seconds:.1f}",
                args.rows / seconds,
                batches,
                f"{longest_ms:.0f}",
                w["writes"],
                w["p50"],
                w["p99"],
                w["max"],
                f"{w['slow_share']:.2%}",
            ]

        def single_update() -> None:
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = 0")
                cursor.execute(SINGLE_UPDATE)

        for target_ms in (args.target_batch_ms, args.other_target_batch_ms):
            plan = plan_build(
                BackfillOptions(
                    model_label="orders.Customer",
                    field_name="email_normalized",
                    source=Expression(EXPRESSION),
                    batch_size=1000,
                    target_batch_ms=target_ms,
                    restart=True,
                )
            )
            seconds, w, run = under_writes(
                server.socket_url(), args.rows, lambda plan=plan: backfill(plan)
            )
            rows.append(
                row(
                    f"backfill_column, target {target_ms:g} ms"
                    + (" (the default)" if target_ms == args.target_batch_ms else ""),
                    seconds,
                    w,
                    f"{run.batches:,}",
                    run.longest_batch_ms,
                )
            )
            reset_column()
        seconds, w, _ = under_writes(server.socket_url(), args.rows, single_update)
        rows.append(row("single UPDATE", seconds, w, "1", seconds * 1000))

    ratio = rows[0][2] / rows[-1][2]
    body = (
        f'{args.rows:,} customers, `--expression "{EXPRESSION}"`, default target batch {args.target_batch_ms:g} ms; '
        "a writer updates one random row every 5 ms throughout, each write timed. PostgreSQL 18 (embedded).\n\n"
        + table(
            [
                "method",
                "seconds",
                "rows/s",
                "batches",
                "longest batch ms",
                "writes",
                "writer p50 ms",
                "writer p99 ms",
                "writer max ms",
                "writes over 50 ms",
            ],
            rows,
        )
        + f"\n\nbackfill_column rows/s vs the single UPDATE: **{ratio:.2f}x**; its longest batch "
        f"{float(rows[0][4]):.0f} ms against a {args.target_batch_ms:g} ms target "
        f"({float(rows[0][4]) / args.target_batch_ms:.1f}x).\n"
    )
    write_results("backfill", "Backfill vs single UPDATE", "bench/backfill.py", body)


if __name__ == "__main__":
    main()
