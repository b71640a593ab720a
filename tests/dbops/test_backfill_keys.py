"""Keyset batches over keys that are not integers: a UUID (UUIDv7-ordered) and Django 5.2's
CompositePrimaryKey (a row-value comparison), killed mid-run and resumed from the checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction

from dbops.backfill import BackfillOptions, Expression, plan_build
from dbops.models import BackfillRun, BackfillStatus
from tests.dbops_testapp.models import CompositeItem, Item, UuidItem
from tests.helpers import ROOT, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

# model label, the key's columns as one text for the audit trigger, how rows are made
KINDS = {
    "integer": ("dbops_testapp.Item", "NEW.id::text"),
    "uuid": ("dbops_testapp.UuidItem", "NEW.id::text"),
    "composite": ("dbops_testapp.CompositeItem", "NEW.tenant || '/' || NEW.code"),
}
MODELS = {"integer": Item, "uuid": UuidItem, "composite": CompositeItem}
FILL = ["name_upper", "--expression", "upper(name)"]


def rows_create(kind: str, count: int = 200) -> None:
    if kind == "composite":
        CompositeItem.objects.bulk_create(
            CompositeItem(tenant=1 + i % 4, code=f"c-{i:04d}", name=f"thing {i}")
            for i in range(count)
        )
    else:
        MODELS[kind].objects.bulk_create(MODELS[kind](name=f"thing {i}") for i in range(count))


@pytest.fixture(params=sorted(KINDS))
def table(request):
    """200 rows of one kind of key, and a trigger recording every update of name_upper by key."""
    kind = request.param
    label, key_sql = KINDS[kind]
    model = MODELS[kind]
    rows_create(kind)
    db_table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE backfill_audit (row_key text NOT NULL)")
        audit = f"INSERT INTO backfill_audit VALUES ({key_sql})"  # noqa: S608 (the test's own SQL)
        cursor.execute(
            "CREATE FUNCTION backfill_audit_row() RETURNS trigger LANGUAGE plpgsql AS $$"
            f" BEGIN {audit}; RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER backfill_audit AFTER UPDATE OF name_upper ON {db_table}"
            " FOR EACH ROW EXECUTE FUNCTION backfill_audit_row()"
        )
    yield kind, label, model
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TRIGGER IF EXISTS backfill_audit ON {db_table}")
        cursor.execute("DROP FUNCTION IF EXISTS backfill_audit_row()")
        cursor.execute("DROP TABLE IF EXISTS backfill_audit")


def updates_per_row() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT row_key, count(*) FROM backfill_audit GROUP BY row_key")
        return dict(cursor.fetchall())


def filled_beyond(model, plan, key: list[str]) -> int:
    """Rows filled after the checkpoint ``key``, in the key's order."""
    keys = ", ".join(plan.key_columns)
    bound = ", ".join(f"%s::{t}" for t in plan.key_types)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {model._meta.db_table}"  # noqa: S608 (test tables)
            f" WHERE name_upper IS NOT NULL AND ({keys}) > ({bound})",
            key,
        )
        return cursor.fetchone()[0]


def test_every_row_is_filled_once_whatever_the_key(table):
    kind, label, model = table
    out = StringIO()
    call_command("backfill_column", label, *FILL, "--batch-size", "7", stdout=out)
    run = BackfillRun.objects.get()
    assert (run.status, run.rows_done, run.keys_scanned) == (BackfillStatus.DONE, 200, 200)
    assert run.batches >= 3
    counts = updates_per_row()
    assert len(counts) == 200 and set(counts.values()) == {1}
    assert not model.objects.filter(name_upper__isnull=True).exists()
    # The checkpoint is the last key in the key's order, each column as PostgreSQL writes it.
    last = model.objects.order_by(*[f.attname for f in model._meta.pk_fields]).last()
    assert run.last_key == [str(getattr(last, f.attname)) for f in model._meta.pk_fields]


def slow_run_under_way(label: str) -> subprocess.Popen:
    """``backfill_column`` in a process of its own, returned once 20 rows are committed."""
    process = subprocess.Popen(
        [sys.executable, "manage.py", "backfill_column", label, *FILL]
        + ["--batch-size", "5", "--target-batch-ms", "1000000", "--sleep", "0.05"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not BackfillRun.objects.filter(rows_done__gte=20).exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the subprocess made no progress"
        time.sleep(0.02)
    return process


@pytest.mark.parametrize("table", ["uuid", "composite"], indirect=True)
def test_a_run_killed_mid_way_resumes_from_its_checkpoint(table):
    kind, label, model = table
    process = slow_run_under_way(label)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(10)

    killed = BackfillRun.objects.get()
    assert killed.status == BackfillStatus.RUNNING and 20 <= killed.rows_done < 200
    plan = plan_build(BackfillOptions(label, "name_upper", Expression("upper(name)")))
    # The checkpoint names exactly the rows done: those up to it, in the key's order, and no other.
    assert model.objects.exclude(name_upper=None).count() == killed.rows_done
    assert filled_beyond(model, plan, killed.last_key) == 0

    call_command("backfill_column", label, *FILL, stdout=StringIO())
    resumed = BackfillRun.objects.get()
    assert resumed.pk == killed.pk and resumed.status == BackfillStatus.DONE
    assert resumed.rows_done == 200
    counts = updates_per_row()
    assert len(counts) == 200 and set(counts.values()) == {1}, "a row was updated twice"


def test_the_checkpoint_survives_the_json_round_trip_for_awkward_key_values():
    """Text columns in a composite key: quotes, commas, spaces, non-ASCII, a backslash."""
    codes = ["a,b", 'quote"d', "it's", " lead", "ü-umlaut", "back\\slash", "(x, y)"]
    CompositeItem.objects.bulk_create(
        CompositeItem(tenant=7, code=code, name=f"n{i}") for i, code in enumerate(codes)
    )
    # One row per batch (each takes over its 1 ms target): every value is a checkpoint once.
    call_command(
        "backfill_column",
        "dbops_testapp.CompositeItem",
        "name_upper",
        "--expression",
        "(SELECT upper(name) FROM pg_sleep(0.002))",
        "--batch-size",
        "1",
        "--target-batch-ms",
        "1",
        stdout=StringIO(),
    )
    run = BackfillRun.objects.get()
    assert run.rows_done == len(codes) and run.batches == len(codes)
    assert not CompositeItem.objects.filter(name_upper=None).exists()
    with connection.cursor() as cursor:
        cursor.execute("SELECT max(code) FROM dbops_testapp_compositeitem")
        assert run.last_key == ["7", cursor.fetchone()[0]]


def test_composite_batches_read_their_rows_through_the_primary_key_index():
    """50,000 rows, all matching: each batch is index lookups, never a scan of the table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO dbops_testapp_compositeitem (tenant, code, name)"
            " SELECT i % 10, 'c-' || i, 'n' || i FROM generate_series(1, 50000) i ORDER BY random()"
        )
        cursor.execute("ANALYZE dbops_testapp_compositeitem")
    plan = plan_build(
        BackfillOptions("dbops_testapp.CompositeItem", "name_upper", Expression("upper(name)"))
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for name, value in plan.batch_settings().items():
            cursor.execute("SELECT set_config(%s, %s, true)", [name, value])
        cursor.execute("SELECT set_config('random_page_cost', '20', true)")
        cursor.execute(
            f"EXPLAIN (FORMAT JSON) {plan.update_sql()}",
            {"after_0": "3", "after_1": "c-100", "limit": 1000},
        )
        explained = json.dumps(cursor.fetchone()[0])
    assert '"Seq Scan"' not in explained, explained
    assert explained.count('"Index Name": "dbops_testapp_compositeitem_pkey"') == 2
