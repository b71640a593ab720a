"""Migrations on a big table: each dbops operation against Django's plain one, writes timed.

On a customers table of 2,000,000 rows (default) on a throwaway PostgreSQL, in one run, a writer
updates one random row every 5 ms throughout and times each write. For each change, Django's
plain operation (as a project without dbops runs it: in the migration's transaction, under the
application's timeouts), then, after undoing it, the dbops form (under the migration guard, as
``manage.py migrate`` runs it). The last pair adds a column while a report holds the table for
``--report-s`` seconds: the plain ALTER waits behind the report, with every write queued behind
it; the guarded one gives up after its lock timeout, lets the writes through, and tries again.
Writes bench/results/migrations.md.

    .venv/bin/python bench/migrations.py [--rows 2000000] [--report-s 10]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import table, write_results  # noqa: E402
from bench.dataset import customers_populate, django_setup, under_writes  # noqa: E402
from devdb import embedded  # noqa: E402

APP = "orders"


def pairs():
    """(change, Django's operations, dbops' operations): the same change in both forms."""
    from django.contrib.postgres.operations import AddConstraintNotValid
    from django.db import migrations, models

    from dbops import operations as ops

    index = models.Index(fields=["name", "region"], name="bench_name_region")
    unique = models.UniqueConstraint(fields=["name"], name="bench_name_unique")
    check = models.CheckConstraint(
        condition=models.Q(name__startswith="Customer"), name="bench_name_check"
    )
    fk = models.ForeignKey(
        "orders.customer", null=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    return [
        (
            "index",
            [migrations.AddIndex("customer", index)],
            [ops.AddIndexConcurrently("customer", index)],
        ),
        (
            "unique constraint",
            [migrations.AddConstraint("customer", unique)],
            [ops.AddUniqueConstraintConcurrently("customer", unique)],
        ),
        (
            "check constraint",
            [migrations.AddConstraint("customer", check)],
            [
                AddConstraintNotValid("customer", check),
                ops.ValidateConstraintWithLockTimeout("customer", "bench_name_check"),
            ],
        ),
        (
            "foreign key",
            [migrations.AlterField("customer", "referrer", fk)],
            [
                ops.AddForeignKeyNotValid("customer", "referrer", "bench_referrer_fk"),
                ops.ValidateConstraintWithLockTimeout("customer", "bench_referrer_fk"),
            ],
        ),
        (
            "NOT NULL",
            [
                migrations.AlterField(
                    "customer", "nick", models.CharField(max_length=20, db_default="x")
                )
            ],
            [ops.SetNotNullPhased("customer", "nick")],
        ),
        (
            "drop column",
            [migrations.RemoveField("customer", "nick")],
            [
                ops.SafeRemoveField("customer", "nick", stage="pending"),
                ops.SafeRemoveField("customer", "nick", stage="delete"),
            ],
        ),
    ]


def setup_operations():
    """Columns the pairs work on, added before anything is timed (catalog-only changes)."""
    from django.db import migrations, models

    return [
        migrations.AddField(
            "customer",
            "referrer",
            models.ForeignKey(
                "orders.customer",
                null=True,
                on_delete=models.SET_NULL,
                related_name="+",
                db_constraint=False,
                db_index=False,
            ),
        ),
        migrations.AddField(
            "customer", "nick", models.CharField(max_length=20, null=True, db_default="x")
        ),
    ]


def apply(operations, state, *, guarded: bool):
    """Apply ``operations`` from ``state`` as a migration would; the states passed through."""
    from django.db import connection

    from dbops.migration_guard import migration_guard

    states = [state]
    for operation in operations:
        new_state = states[-1].clone()
        operation.state_forwards(APP, new_state)
        if guarded:
            with migration_guard(connection), connection.schema_editor(atomic=False) as editor:
                operation.database_forwards(APP, editor, states[-1], new_state)
        else:
            with connection.schema_editor(atomic=True) as editor:
                operation.database_forwards(APP, editor, states[-1], new_state)
        states.append(new_state)
    return states


def undo(operations, states) -> None:
    from django.db import connection

    from dbops.migration_guard import migration_guard

    for operation, before, after in reversed(
        list(zip(operations, states, states[1:], strict=False))
    ):
        with migration_guard(connection), connection.schema_editor(atomic=False) as editor:
            operation.database_backwards(APP, editor, after, before)


def measure(url: str, rows: int, work: Callable[[], object]) -> tuple[float, dict]:
    seconds, writes, _ = under_writes(url, rows, work)
    return seconds, writes


def row(change: str, form: str, seconds: float, w: dict, plain_s: float | None) -> list:
    ratio = f"{seconds / plain_s:.2f}x" if plain_s else "1.00x"
    return [change, form, f"{seconds:.2f}", ratio, w["writes"], w["p50"], w["p99"], w["max"]]


def report_pair(url: str, rows: int, state, report_s: float) -> list[list]:
    """A nullable column added while a report holds the table for ``report_s`` seconds."""
    from django.db import migrations, models

    operation = migrations.AddField("customer", "memo", models.TextField(null=True))
    results = []
    plain_s = None
    for form, guarded in (("AddField (Django)", False), ("AddField under the guard (dbops)", True)):
        holding = threading.Event()

        def report(holding=holding):
            import psycopg

            with psycopg.connect(url) as conn:
                conn.execute("SELECT count(*) FROM orders_customer WHERE id < 1000")
                holding.set()
                time.sleep(report_s)

        reporter = threading.Thread(target=report)

        def work(guarded=guarded, reporter=reporter, holding=holding):
            reporter.start()
            holding.wait(30)
            return apply([operation], state, guarded=guarded)

        seconds, w = measure(url, rows, work)
        reporter.join()
        undo([operation], apply_states(operation, state))
        results.append(
            row(f"add a column behind a {report_s:g} s report", form, seconds, w, plain_s)
        )
        plain_s = plain_s or seconds
        print(results[-1], file=sys.stderr)
    return results


def apply_states(operation, state):
    new_state = state.clone()
    operation.state_forwards(APP, new_state)
    return [state, new_state]


def run(url: str, rows: int, report_s: float) -> list[list]:
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    state = apply(setup_operations(), MigrationLoader(connection).project_state(), guarded=True)[-1]
    results = []
    for change, plain, ours in pairs():
        plain_s = None
        for form, operations, guarded in (("Django", plain, False), ("dbops", ours, True)):
            states: list = []
            seconds, w = measure(
                url,
                rows,
                lambda ops=operations, g=guarded, out=states: out.extend(
                    apply(ops, state, guarded=g)
                ),
            )
            names = " + ".join(type(op).__name__ for op in operations)
            results.append(row(change, f"{names} ({form})", seconds, w, plain_s))
            print(results[-1], file=sys.stderr)
            plain_s = plain_s or seconds
            undo(operations, states)
    return results + report_pair(url, rows, state, report_s)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--report-s", type=float, default=10.0)
    args = parser.parse_args()

    with embedded.temporary_server(settings={"max_wal_size": "4GB"}) as server:
        django_setup(server.socket_url())
        print(f"populating {args.rows:,} customers...", file=sys.stderr)
        customers_populate(args.rows)
        results = run(server.socket_url(), args.rows, args.report_s)

    from dbops.conf import dbops_settings

    body = (
        f"{args.rows:,} customers; a writer updates one random row every 5 ms throughout, each "
        "write timed. Django's plain operation runs in the migration's transaction under the "
        "application's timeouts (statement_timeout 30 s); the dbops form under the migration "
        f"guard (lock timeout {dbops_settings.MIGRATION_LOCK_TIMEOUT_MS} ms, "
        f"{dbops_settings.MIGRATION_LOCK_ATTEMPTS} attempts; no timeout on CONCURRENTLY and "
        "VALIDATE). PostgreSQL 18 (embedded). Ratio: seconds against Django's form of the same "
        "change.\n\n"
        + table(
            [
                "change",
                "operations",
                "seconds",
                "vs Django",
                "writes during",
                "writer p50 ms",
                "writer p99 ms",
                "writer max ms",
            ],
            results,
        )
        + "\n\nDjango's forms hold a lock that blocks writes for their whole scan or build (SHARE "
        "for an index, ACCESS EXCLUSIVE for a unique or check constraint or SET NOT NULL, SHARE "
        "ROW EXCLUSIVE for a foreign key): the writes of that time wait until it ends. The dbops "
        "forms do the long part under SHARE UPDATE EXCLUSIVE, which writes do not wait for; "
        "they take their brief locks under the lock timeout. Behind a report, the plain ALTER "
        "queues every write for as long as the report lasts; the guarded one gives up after "
        "its lock timeout, lets the writes through, and tries again.\n"
    )
    write_results(
        "migrations", "Migrations on a big table: dbops vs Django", "bench/migrations.py", body
    )


if __name__ == "__main__":
    main()
