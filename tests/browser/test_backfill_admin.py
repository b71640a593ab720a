"""An operator pauses and resumes a running backfill from its admin page, and the command obeys."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dbops.models import BackfillEvent, BackfillRun, BackfillStatus
from tests.dbops_testapp.models import Item
from tests.helpers import ROOT, subprocess_env

OPERATOR, PASSWORD = "operator", "operator-pass-2024"


def wait_for(condition, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the backfill exited: {process.communicate()[0]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def running_backfill(transactional_db):
    """``backfill_column`` in a process of its own, one row per batch (each about 2 ms, over
    its 1 ms target) and 50 ms between batches: 300 rows take 15 s or more."""
    Item.objects.bulk_create(Item(name=f"thing {i}") for i in range(300))
    process = subprocess.Popen(
        [sys.executable, "manage.py", "backfill_column", "dbops_testapp.Item", "name_upper"]
        + ["--expression", "(SELECT upper(name) FROM pg_sleep(0.002))"]
        + ["--batch-size", "1", "--target-batch-ms", "1", "--sleep", "0.05"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: BackfillRun.objects.filter(rows_done__gte=10).exists(), "10 rows", process)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_an_operator_pauses_and_resumes_a_running_backfill(
    browser, running_backfill, django_user_model
):
    django_user_model.objects.create_superuser(OPERATOR, "op@example.com", PASSWORD)
    run = BackfillRun.objects.get()
    page = f"/admin/dbops/backfillrun/{run.pk}/change/"
    browser.login(OPERATOR, PASSWORD)
    browser.get(page)
    assert browser.find("#backfill-run").get_attribute("data-status") == "running"
    assert "command running:" in browser.text("#backfill-run")

    browser.find("#backfill-pause-reason").send_keys("month-end reports")
    browser.submit(browser.find("#backfill-pause"))
    assert f"Paused run #{run.pk}" in browser.text(".messagelist")
    assert "Its command obeys after the batch in flight" in browser.text(".messagelist")
    # The command answers after its batch in flight, and writes nothing more while paused.
    wait_for(
        lambda: BackfillEvent.objects.filter(action="paused").exists(),
        "the command to pause",
        running_backfill,
    )
    paused_at = BackfillRun.objects.get().rows_done
    browser.get(page)
    assert browser.find("#backfill-run").get_attribute("data-status") == "paused"
    history = browser.text("#backfill-history")
    assert OPERATOR in history and "month-end reports" in history and "paused" in history
    assert int(browser.find("#backfill-rows-done").get_attribute("data-rows-done")) == paused_at
    assert paused_at < 300 and BackfillRun.objects.get().rows_done == paused_at

    browser.submit(browser.find("#backfill-resume"))
    assert f"Resumed run #{run.pk}" in browser.text(".messagelist")
    output, _ = running_backfill.communicate(timeout=120)
    assert running_backfill.returncode == 0, output
    assert "paused by operator" in output and "month-end reports" in output
    assert "Resumed." in output and "Done: dbops_testapp.Item.name_upper: 300 rows" in output

    browser.get(page)
    assert browser.find("#backfill-run").get_attribute("data-status") == "done"
    actions = [
        row.get_attribute("data-action") for row in browser.find_all("#backfill-history tbody tr")
    ]
    assert actions == ["start", "pause", "paused", "resume", "resumed", "done"]
    assert BackfillRun.objects.get().status == BackfillStatus.DONE
    assert not Item.objects.filter(name_upper=None).exists()
