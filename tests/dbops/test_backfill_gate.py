"""A migration gated on the backfill run (``RequireBackfillFinished``), through ``migrate``:
tests/dbops_testapp/migrations/0002_require_item_backfill.py refuses until the run is done."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.db.migrations.writer import MigrationWriter

from dbops.backfill import run_cancel, run_pause, run_resume
from dbops.backfill.gate import RequireBackfillFinished
from dbops.models import BackfillRun
from tests.dbops_testapp.models import Item
from tests.helpers import run_command

pytestmark = pytest.mark.django_db(transaction=True)

GATE = ("dbops_testapp", "0002_require_item_backfill")
FILL = ["dbops_testapp.Item", "name_upper", "--expression", "upper(name)"]


def applied() -> bool:
    return MigrationRecorder(connection).migration_qs.filter(app=GATE[0], name=GATE[1]).exists()


def migrate(*args: str) -> str:
    out = StringIO()
    run_command("migrate", *args, stdout=out, verbosity=1)
    return out.getvalue()


@pytest.fixture
def before_the_gate():
    """The test app migrated back to before the gate, with rows to fill; forward again after."""
    migrate(GATE[0], "0001")
    assert not applied()
    Item.objects.bulk_create(Item(name=f"thing {i}") for i in range(30))
    yield
    Item.objects.update(name_upper="x")  # whatever the test left, the gate may pass now
    BackfillRun.objects.all().delete()
    Item.objects.all().delete()
    migrate(GATE[0])
    assert applied()


def test_with_no_run_the_migration_stops_naming_the_command(before_the_gate):
    with pytest.raises(CommandError) as refused:
        migrate(GATE[0])
    message = str(refused.value)
    assert (
        "No backfill of dbops_testapp.Item.name_upper has run on the database 'default'" in message
    )
    assert (
        'python manage.py backfill_column dbops_testapp.Item name_upper --expression "upper(name)"'
        in message
    )
    assert not applied()


def test_a_paused_run_keeps_the_migration_waiting_until_it_is_done(before_the_gate):
    run_command("backfill_column", *FILL, "--batch-size", "10", stdout=StringIO())
    run = BackfillRun.objects.get()
    BackfillRun.objects.filter(pk=run.pk).update(status="running")  # as if still under way
    run_pause(run_id=run.pk, actor="alice")
    with pytest.raises(CommandError) as refused:
        migrate(GATE[0])
    message = str(refused.value)
    assert f"run #{run.pk} is paused after 30 rows" in message
    assert f"Resume it in the admin (/admin/dbops/backfillrun/{run.pk}/change/)" in message
    assert "backfill_column dbops_testapp.Item name_upper --expression 'upper(name)'" in message
    assert not applied()

    run_resume(run_id=run.pk, actor="alice")
    run_command("backfill_column", *FILL, stdout=StringIO())  # finds nothing left: done
    assert "Applying dbops_testapp.0002_require_item_backfill... OK" in migrate(GATE[0])
    assert applied()


def test_a_cancelled_run_keeps_it_waiting_and_names_restart(before_the_gate):
    Item.objects.filter(pk__in=Item.objects.order_by("pk")[:10].values("pk")).update(name_upper="X")
    run = BackfillRun.objects.create(
        target="dbops_testapp.Item.name_upper",
        options={"expression": "upper(name)", "where": '"name_upper" IS NULL'},
        rows_done=10,
    )
    run_cancel(run_id=run.pk, actor="bob")
    with pytest.raises(CommandError, match=r"run #\d+ is cancelled after 10 rows"):
        migrate(GATE[0])
    with pytest.raises(CommandError, match="--restart"):
        migrate(GATE[0])
    assert not applied()


def test_the_gate_round_trips_through_the_migration_writer():
    operation = RequireBackfillFinished("Item", "name_upper", command="x", app_label="other")
    name, args, kwargs = operation.deconstruct()
    assert (name, args) == ("RequireBackfillFinished", [])
    assert RequireBackfillFinished(**kwargs).deconstruct() == (name, args, kwargs)
    text, imports = MigrationWriter.serialize(operation)
    assert "RequireBackfillFinished(" in text and "app_label='other'" in text
