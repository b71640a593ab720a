"""Index builds: ``dbops.operations.AddIndexConcurrently`` vs a plain CREATE INDEX, writes timed.

On a customers table of 2,000,000 rows (default) on a throwaway PostgreSQL, in one run: a plain
index build (``schema_editor.add_index``, as a default AddIndex migration does), then, after
dropping it, the same index through the project's concurrent operation. A writer updates random
single rows (every 5 ms) throughout and times each write. Writes bench/results/index.md.

    .venv/bin/python bench/index.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_results  # noqa: E402
from bench.dataset import customers_populate, django_setup, under_writes  # noqa: E402
from devdb import embedded  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()

    with embedded.temporary_server(settings={"max_wal_size": "4GB"}) as server:
        django_setup(server.socket_url())
        from django.db import connection, models
        from django.db.migrations.loader import MigrationLoader

        from dbops.operations import AddIndexConcurrently

        print(f"populating {args.rows:,} customers...", file=sys.stderr)
        customers_populate(args.rows)
        index = models.Index(fields=["name", "region"], name="bench_customer_name_region")
        state = MigrationLoader(connection).project_state()
        new_state = state.clone()
        operation = AddIndexConcurrently("customer", index)
        operation.state_forwards("orders", new_state)
        model = new_state.apps.get_model("orders", "Customer")

        def plain():
            with connection.schema_editor() as editor:
                editor.add_index(model, index)

        def concurrent():
            with connection.schema_editor(atomic=False) as editor:
                operation.database_forwards("orders", editor, state, new_state)

        rows = []
        for label, build in (
            ("plain CREATE INDEX (AddIndex)", plain),
            ("AddIndexConcurrently (dbops)", concurrent),
        ):
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = 0")
                cursor.execute("DROP INDEX IF EXISTS bench_customer_name_region")
            seconds, w, _ = under_writes(server.socket_url(), args.rows, build)
            rows.append([label, f"{seconds:.1f}", w["writes"], w["p50"], w["p99"], w["max"]])
            print(rows[-1], file=sys.stderr)

    body = (
        f"{args.rows:,} customers, an index on (name, region); a writer updates one random row every 5 ms "
        "throughout, each write timed. PostgreSQL 18 (embedded).\n\n"
        + table(
            [
                "build",
                "seconds",
                "writes during",
                "writer p50 ms",
                "writer p99 ms",
                "writer max ms",
            ],
            rows,
        )
        + "\n\nA plain build holds a SHARE lock, so every write waits until the build ends. The concurrent "
        "build scans the table twice and waits for running transactions, but takes no lock that blocks writes.\n"
    )
    write_results("index", "Concurrent vs plain index build", "bench/index.py", body)


if __name__ == "__main__":
    main()
