"""People steer a running backfill: pause, resume and cancel, obeyed within one batch, a pause
kept across restarts of the command, a cancel that keeps the checkpoint; the admin's buttons and
actions, with their permission and CSRF."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from zeal import zeal_context

from dbops.backfill import BackfillControlError, run_cancel, run_pause, run_resume
from dbops.models import BackfillEvent, BackfillRun, BackfillStatus
from tests.dbops_testapp.factories import person_create
from tests.dbops_testapp.models import Item
from tests.helpers import ROOT, run_command, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)

LABEL = "dbops_testapp.Item"
FILL = [LABEL, "name_upper", "--expression", "upper(name)"]
SLOW = ["--batch-size", "5", "--target-batch-ms", "1000000", "--sleep", "0.02"]


@pytest.fixture
def items(settings):
    settings.DBOPS = {**settings.DBOPS, "BACKFILL_POLL_S": 0.02}
    Item.objects.bulk_create(Item(name=f"thing {i}") for i in range(200))


class Running:
    """``backfill_column`` in a thread of this process (its own connection)."""

    def __init__(self, *args: str):
        self.out = StringIO()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=args)
        self.thread.start()

    def _run(self, *args):
        try:
            call_command("backfill_column", *args, stdout=self.out)
        except BaseException as exc:  # noqa: BLE001 (handed to the test)
            self.error = exc
        finally:
            connection.close()

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the backfill did not finish"


def wait_for(condition, what: str, timeout: float = 30, process=None):
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None:
            assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def run_() -> BackfillRun:
    """The newest run (read again each time: not an N+1 but a look at a changing row)."""
    return BackfillRun.objects.order_by("-pk").first()


def acknowledged(action: str) -> bool:
    return BackfillEvent.objects.filter(action=action).exists()


def test_a_running_command_pauses_within_one_batch_and_goes_on_when_resumed(items):
    running = Running(*FILL, *SLOW)
    wait_for(lambda: BackfillRun.objects.filter(rows_done__gte=20).exists(), "20 rows")
    paused = run_pause(run_id=run_().pk, actor="alice", reason="the nightly report runs")
    wait_for(lambda: acknowledged("paused"), "the command to pause")
    at_pause = run_()
    # Within one batch of the request: the batch in flight, and no other.
    assert paused.batches <= at_pause.batches <= paused.batches + 1
    assert at_pause.status == BackfillStatus.PAUSED and running.thread.is_alive()
    time.sleep(0.3)  # fifteen polls: still paused, nothing written
    assert run_().rows_done == at_pause.rows_done
    assert Item.objects.exclude(name_upper=None).count() == at_pause.rows_done

    run_resume(run_id=at_pause.pk, actor="bob")
    running.join()
    assert running.error is None, running.error
    done = run_()
    assert (done.status, done.rows_done) == (BackfillStatus.DONE, 200)
    assert not Item.objects.filter(name_upper=None).exists()
    history = list(done.events.values_list("action", "actor"))
    assert [a for a, _ in history] == ["start", "pause", "paused", "resume", "resumed", "done"]
    assert ("pause", "alice") in history and ("resume", "bob") in history
    output = running.out.getvalue()
    assert "paused by alice" in output and "the nightly report runs" in output
    assert "Resumed." in output


def test_a_paused_run_stays_paused_when_its_command_is_restarted(items):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "backfill_column", *FILL, *SLOW],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(
            lambda: BackfillRun.objects.filter(rows_done__gte=20).exists(),
            "20 rows",
            process=process,
        )
        run_pause(run_id=run_().pk, actor="alice", reason="disk filling up")
        wait_for(lambda: acknowledged("paused"), "the command to pause", process=process)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    stopped = run_()
    assert stopped.status == BackfillStatus.PAUSED

    restarted = Running(*FILL, *SLOW)
    wait_for(lambda: BackfillEvent.objects.filter(action="paused").count() == 2, "a second wait")
    assert run_().rows_done == stopped.rows_done and restarted.thread.is_alive()
    assert "is paused by alice" in restarted.out.getvalue()
    assert "disk filling up" in restarted.out.getvalue()
    run_resume(run_id=stopped.pk, actor="alice")
    restarted.join()
    assert restarted.error is None, restarted.error
    assert (run_().status, run_().rows_done) == (BackfillStatus.DONE, 200)


def test_a_cancelled_run_stops_keeps_its_checkpoint_and_needs_restart(items):
    running = Running(*FILL, *SLOW)
    wait_for(lambda: BackfillRun.objects.filter(rows_done__gte=20).exists(), "20 rows")
    run_cancel(run_id=run_().pk, actor="carol", reason="wrong expression")
    running.join()
    assert isinstance(running.error, CommandError) and running.error.returncode == 3
    assert "was cancelled by carol (wrong expression)" in str(running.error)
    cancelled = run_()
    assert cancelled.status == BackfillStatus.CANCELLED and cancelled.finished_at is not None
    # The checkpoint names exactly the rows filled.
    filled = Item.objects.exclude(name_upper=None)
    assert filled.count() == cancelled.rows_done < 200
    assert not filled.filter(pk__gt=int(cancelled.last_key[0])).exists()
    assert cancelled.lease_owner == ""

    with pytest.raises(CommandError, match="was cancelled by carol .* Pass --restart"):
        run_command("backfill_column", *FILL, stdout=StringIO())
    run_command("backfill_column", *FILL, "--restart", stdout=StringIO())
    assert BackfillRun.objects.filter(status=BackfillStatus.CANCELLED).count() == 1
    assert BackfillRun.objects.filter(status=BackfillStatus.DONE).count() == 1
    assert not Item.objects.filter(name_upper=None).exists()


def test_an_action_the_run_cannot_take_is_refused_and_changes_nothing(items):
    call_command("backfill_column", *FILL, stdout=StringIO())
    done = run_()
    with pytest.raises(BackfillControlError, match="is done: it cannot be paused"):
        run_pause(run_id=done.pk, actor="alice")
    with pytest.raises(BackfillControlError, match="cannot be cancelled"):
        run_cancel(run_id=done.pk, actor="alice")
    with pytest.raises(BackfillControlError, match="no backfill run #999999"):
        run_resume(run_id=999999, actor="alice")
    assert run_().status == BackfillStatus.DONE
    assert not BackfillEvent.objects.filter(action__in=["pause", "cancel", "resume"]).exists()


# -- the admin -------------------------------------------------------------------------------


@pytest.fixture
def stalled_run(items):
    """A run killed after 50 rows: RUNNING, no live command."""
    Item.objects.filter(pk__lte=Item.objects.order_by("pk")[49].pk).update(name_upper="X")
    return BackfillRun.objects.create(
        target="dbops_testapp.Item.name_upper",
        options={"expression": "upper(name)", "where": '"name_upper" IS NULL'},
        last_key=["50"],
        rows_done=50,
        keys_scanned=50,
        rows_estimate=200,
        pauses={"vacuum": {"count": 2, "seconds": 3.5, "last": "autovacuum pid 7 works"}},
    )


def staff(*, may_control: bool) -> Client:
    """A staff member who may view runs (and steer them), logged in: a unit of work of its own."""
    client = Client(enforce_csrf_checks=True)
    with zeal_context():
        user = person_create(is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_backfillrun"))
        if may_control:
            user.user_permissions.add(Permission.objects.get(codename="control_backfillrun"))
        client.force_login(user)
    client.username = user.get_username()
    return client


def post_with_csrf(client: Client, page: str, url: str, data: dict):
    client.get(page)
    return client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


def test_the_run_page_shows_progress_pauses_history_and_the_buttons(stalled_run):
    run_pause(run_id=stalled_run.pk, actor="alice", reason="reindexing first")
    client = staff(may_control=True)
    page = client.get(reverse("admin:dbops_backfillrun_change", args=[stalled_run.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    for shown in [
        "25% of the table's rows visited",
        "≈ 150 (of ≈ 200 in the table)",
        "autovacuum pid 7 works",
        "reindexing first",
        "alice",
        'id="backfill-resume"',
        'id="backfill-cancel"',
        "python manage.py backfill_column dbops_testapp.Item name_upper --expression",
    ]:
        assert shown in html, shown
    assert 'id="backfill-pause"' not in html  # already paused


def test_the_buttons_post_with_csrf_and_need_the_permission(stalled_run):
    page = reverse("admin:dbops_backfillrun_change", args=[stalled_run.pk])
    pause = reverse("admin:dbops_backfillrun_control", args=[stalled_run.pk, "pause"])

    viewer = staff(may_control=False)
    assert 'id="backfill-pause"' not in viewer.get(page).content.decode()
    assert post_with_csrf(viewer, page, pause, {"reason": "x"}).status_code == 403

    controller = staff(may_control=True)
    assert controller.post(pause, {"reason": "no token"}).status_code == 403  # CSRF
    assert controller.get(pause).status_code == 405
    assert run_().status == BackfillStatus.RUNNING

    response = post_with_csrf(controller, page, pause, {"reason": "load test"})
    assert response.status_code == 302 and response["Location"] == page
    assert run_().status == BackfillStatus.PAUSED
    event = BackfillEvent.objects.get(action="pause")
    assert (event.actor, event.note) == (controller.username, "load test")

    resume = reverse("admin:dbops_backfillrun_control", args=[stalled_run.pk, "resume"])
    followed = controller.get(post_with_csrf(controller, page, resume, {})["Location"])
    assert "No command is running it" in followed.content.decode()
    assert run_().status == BackfillStatus.RUNNING
    bogus = reverse("admin:dbops_backfillrun_control", args=[stalled_run.pk, "explode"])
    assert post_with_csrf(controller, page, bogus, {}).status_code == 403
    assert Client().post(pause).status_code == 302  # anonymous: to the login page


def test_changelist_actions_pause_and_cancel_selected_runs(stalled_run):
    controller = staff(may_control=True)
    changelist = reverse("admin:dbops_backfillrun_changelist")
    for action, status in (("pause_selected", "paused"), ("cancel_selected", "cancelled")):
        response = post_with_csrf(
            controller,
            changelist,
            changelist,
            {"action": action, "_selected_action": [stalled_run.pk]},
        )
        assert response.status_code == 302
        assert run_().status == status
    viewer = staff(may_control=False)
    assert "pause_selected" not in viewer.get(changelist).content.decode()
