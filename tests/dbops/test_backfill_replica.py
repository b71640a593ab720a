"""backfill_column waits between batches while the read replica lags (a real standby whose replay
is paused), and reports the pauses."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from dbops.backfill import BackfillOptions, Expression, plan_build
from dbops.backfill.throttle import threshold_ms
from dbops.models import BackfillRun, BackfillStatus
from tests.dbops_testapp.models import Parent

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


@pytest.fixture
def parents(replica):
    Parent.objects.bulk_create([Parent(sku=f"R-{i:04d}", name=f"thing {i}") for i in range(200)])
    replica.catch_up()


@pytest.mark.django_db(transaction=True)
def test_the_default_threshold_is_the_routers_ceiling(settings):
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 1234}
    options = BackfillOptions("dbops_testapp.Parent", "name", Expression("upper(name)"))
    assert options.target_batch_ms == 50
    assert threshold_ms(plan_build(options)) == 1234


def test_a_backfill_pauses_while_the_replica_lags_and_goes_on_when_it_catches_up(parents, replica):
    replica.pause()
    out = StringIO()
    failure = []

    def backfill():
        try:
            call_command(
                "backfill_column",
                "dbops_testapp.Parent",
                "name",
                "--expression",
                "upper(name)",
                "--where",
                "name <> upper(name)",
                "--batch-size",
                "50",
                "--target-batch-ms",
                "1000000",
                "--max-replica-lag-ms",
                "0",
                stdout=out,
            )
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=backfill)
    thread.start()
    deadline = time.monotonic() + 30
    while not BackfillRun.objects.filter(pauses__replica_lag__count__gte=1).exists():
        assert time.monotonic() < deadline and thread.is_alive(), failure
        time.sleep(0.01)
    # Waiting for the replica, with rows left: it does not go on while replay is paused.
    waiting = BackfillRun.objects.get()
    assert waiting.status == BackfillStatus.RUNNING and 50 <= waiting.rows_done < 200
    replica.resume()
    thread.join(30)
    assert not failure, failure
    run = BackfillRun.objects.get()
    assert run.status == BackfillStatus.DONE and run.rows_done == 200
    replica = run.pauses["replica_lag"]
    assert replica["count"] >= 1 and replica["seconds"] > 0
    assert "the replica is" in replica["last"]
    assert f"replica lag {replica['count']}x" in out.getvalue()
    assert "Pausing for replica lag: the replica is" in out.getvalue()
