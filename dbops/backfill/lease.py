"""One run per target at a time, with no session state: a lease in the run's own row.

A session-level ``pg_advisory_lock`` would do it on a direct connection, but behind PgBouncer in
transaction mode the session belongs to whichever client gets that server connection next: the
lock would be held for, and released by, someone else. The lease lives in ``dbops.BackfillRun``
instead (``lease_owner``, ``lease_expires_at``), taken under a row lock, renewed by every batch in
the batch's own transaction (a batch whose run lost its lease rolls back), and given up when the
run ends. A run killed without giving it up: on the same machine its process is gone, so the next
run takes over at once; from elsewhere, the lease lapses ``LEASE_S`` after the last batch.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta

from django.db.models import BooleanField, DateTimeField, ExpressionWrapper, Q
from django.db.models.functions import Now

from dbops.backfill.plan import BackfillError, BackfillPlan

# How long a lease outlives the last sign of life, on top of the run's own pauses.
LEASE_S = 60
# The leases held by runs in this process right now.
_held: set[str] = set()


def owner_new() -> str:
    """host:pid:token, so a run on the same host can tell a dead holder from a live one."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    _held.add(owner)
    return owner


def owner_done(owner: str) -> None:
    _held.discard(owner)


def lease_seconds(plan: BackfillPlan) -> float:
    """Long enough for a batch and the pause after it, plus margin."""
    options = plan.options
    # A run waiting for the replica renews its lease as it waits (dbops.backfill.throttle).
    return LEASE_S + options.sleep + options.statement_timeout_ms / 1000


def expires(plan: BackfillPlan) -> ExpressionWrapper:
    """The database's now() plus the lease: one clock for every host."""
    return ExpressionWrapper(
        Now() + timedelta(seconds=lease_seconds(plan)), output_field=DateTimeField()
    )


def live() -> ExpressionWrapper:
    return ExpressionWrapper(Q(lease_expires_at__gt=Now()), output_field=BooleanField())


def holder_alive(owner: str, lease_live: bool) -> bool:
    """Is the run holding ``owner``'s lease still running?"""
    if not owner or not lease_live:
        return False
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine: trust the lease until it lapses
    pid = int(pid_text)
    if pid == os.getpid():
        return owner in _held
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_busy(plan: BackfillPlan, owner: str) -> BackfillError:
    return BackfillError(
        f"Another backfill of {plan.target} is running right now ({owner}); wait for it to "
        "finish. A run killed on another machine lets go of its lease "
        f"{LEASE_S} s after its last batch."
    )
