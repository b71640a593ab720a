"""People steer a run: pause, resume, cancel (from the admin); the command obeys.

A person's action changes the run's ``status`` at once, under the run's row lock, and records who
did it, when and why (``BackfillEvent``). The command reads the status back with every batch's
checkpoint (and every poll while it waits), so it obeys within one batch:

- **paused**: the command finishes the batch in flight and waits, holding its lease, until someone
  resumes the run. A paused run stays paused across restarts: ``backfill_column`` started on a
  paused run says who paused it and waits in the same way (Ctrl-C leaves it paused).
- **resumed**: the command goes on from its checkpoint; with no command running, the run waits
  for ``backfill_column`` to be run again (the admin shows the command).
- **cancelled**: the command stops after the batch in flight. The run keeps its checkpoint and
  history and counts as finished: the same command refuses to start over it unless told
  ``--restart``, so a cancel sticks until someone decides otherwise.
"""

from __future__ import annotations

import shlex

from django.db import transaction
from django.utils import timezone

from dbops import routing
from dbops.exceptions import DbopsError
from dbops.models import BackfillEvent, BackfillRun, BackfillStatus

Action = BackfillEvent.Action

# What each action may act on, and the status it leaves.
TRANSITIONS = {
    Action.PAUSE: ((BackfillStatus.RUNNING, BackfillStatus.FAILED), BackfillStatus.PAUSED),
    Action.RESUME: ((BackfillStatus.PAUSED,), BackfillStatus.RUNNING),
    Action.CANCEL: (
        (BackfillStatus.RUNNING, BackfillStatus.PAUSED, BackfillStatus.FAILED),
        BackfillStatus.CANCELLED,
    ),
}


class BackfillControlError(DbopsError):
    """The run cannot take that action in its current state; the message says why."""


def _act(*, run_id: int, actor: str, action: str, reason: str, using: str | None) -> BackfillRun:
    allowed, new_status = TRANSITIONS[action]
    using = using or routing.primary_alias()
    with transaction.atomic(using=using):
        # The row lock orders this with the command's checkpoint of the same row.
        run = BackfillRun.objects.using(using).select_for_update().filter(pk=run_id).first()
        if run is None:
            raise BackfillControlError(f"There is no backfill run #{run_id}.")
        if run.status not in allowed:
            raise BackfillControlError(
                f"Run #{run.pk} is {run.get_status_display().lower()}: it cannot be "
                f"{'cancelled' if action == Action.CANCEL else action + 'd'}."
            )
        run.status = new_status
        fields = ["status", "updated_at"]
        if action == Action.CANCEL:
            run.finished_at = timezone.now()
            fields.append("finished_at")
        run.save(using=using, update_fields=fields)
        BackfillEvent.objects.using(using).create(
            run=run, actor=actor, action=action, note=reason.strip()
        )
    return run


def run_pause(
    *, run_id: int, actor: str, reason: str = "", using: str | None = None
) -> BackfillRun:
    """Pause a running (or failed) run: its command stops after the batch in flight and waits."""
    return _act(run_id=run_id, actor=actor, action=Action.PAUSE, reason=reason, using=using)


def run_resume(
    *, run_id: int, actor: str, reason: str = "", using: str | None = None
) -> BackfillRun:
    """Resume a paused run: its command goes on from the checkpoint."""
    return _act(run_id=run_id, actor=actor, action=Action.RESUME, reason=reason, using=using)


def run_cancel(
    *, run_id: int, actor: str, reason: str = "", using: str | None = None
) -> BackfillRun:
    """Cancel an unfinished run: its command stops after the batch in flight; the checkpoint stays."""
    return _act(run_id=run_id, actor=actor, action=Action.CANCEL, reason=reason, using=using)


def command_line(run: BackfillRun) -> str:
    """The ``backfill_column`` command that runs (or resumes) this run, as a shell line."""
    return command_for(run.target, run.options, run.database)


def command_for(target: str, options: dict, database: str) -> str:
    """The command for a target (app_label.Model.field) and recorded options."""
    label, _, field_name = target.rpartition(".")
    words = ["python", "manage.py", "backfill_column", label, field_name]
    for key in ("value", "from_field", "expression", "where"):
        if key in options:
            words += [f"--{key.replace('_', '-')}", options[key]]
    if database != "default":
        words += ["--database", database]
    return shlex.join(words)


def last_action(run: BackfillRun, action: str) -> BackfillEvent | None:
    return run.events.filter(action=action).order_by("-at", "-pk").first()


def describe_pause(run: BackfillRun) -> str:
    """'paused by alice at 10:02:03 UTC: reindexing first' (or less, when unknown)."""
    event = last_action(run, Action.PAUSE)
    if event is None:
        return "paused"
    text = f"paused by {event.actor} at {event.at:%Y-%m-%d %H:%M:%S %Z}"
    return f"{text}: {event.note}" if event.note else text
