"""The run's row while a command works on it: every statement the backfill runs against
``dbops_backfillrun``.

Each statement writes and reads back in one round trip. The checkpoint commits inside its batch's
transaction (both happen or neither) and returns the run's status, which a person may have changed
from the admin (pause, cancel), with the readings the throttle needs: the server's WAL position
and sessions waiting behind this batch's row locks (asked before the batch commits, while it
still holds them). A VACUUM on the table is asked apart, at most once a second. Through Django's cursor, so execute wrappers (the query
counter, the tests' hooks) see these statements.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.utils import timezone

from dbops.backfill.plan import BackfillPlan
from dbops.models import BackfillEvent, BackfillRun, BackfillStatus


@dataclass(frozen=True)
class Readings:
    """The run's status and the database's health, read in the same statement."""

    status: str
    wal_bytes: int | None = None  # pg_current_wal_insert_lsn(), in bytes
    lock_waiters: int = 0  # sessions waiting behind the batch's locks (checkpoint only)
    longest_lock_wait_ms: float = 0.0
    at: float = 0.0  # time.monotonic() when read


def _q(plan: BackfillPlan, name: str) -> str:
    return connections[plan.database].ops.quote_name(name)


def _readings_sql(*, waiters: bool) -> str:
    """The columns every statement returns: cheap ones (this runs with every batch)."""
    columns = ['"status"', "pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"]
    if waiters:
        # pg_locks, not pg_stat_activity: a session of another role shows its waits there to
        # anyone. pg_blocking_pids() only for the sessions that wait (OFFSET 0 keeps the order).
        columns.append(
            """(SELECT ARRAY[count(*), coalesce(max(extract(epoch FROM clock_timestamp()
                                                         - w.waitstart)) * 1000, 0)]::float8[]
                  FROM (SELECT pid, min(waitstart) AS waitstart FROM pg_locks
                         WHERE NOT granted GROUP BY pid OFFSET 0) w
                 WHERE pg_backend_pid() = ANY(pg_blocking_pids(w.pid)))"""
        )
    return ", ".join(columns)


def _readings(row: tuple | None) -> Readings | None:
    if row is None:
        return None
    waiters = row[2] if len(row) > 2 and row[2] is not None else (0, 0.0)
    return Readings(
        status=row[0],
        wal_bytes=row[1],
        lock_waiters=int(waiters[0]),
        longest_lock_wait_ms=float(waiters[1]),
        at=time.monotonic(),
    )


def _one(plan: BackfillPlan, sql: str, params: dict[str, Any]) -> tuple | None:
    with connections[plan.database].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()


def vacuum_on_table(plan: BackfillPlan) -> str | None:
    """The VACUUMs working on the target table now ("autovacuum pid 123 (scanning heap)"), or
    None. About a millisecond (the progress view reads every backend's state): the throttle asks
    at most once a second."""
    sql = """
        SELECT string_agg(CASE a.backend_type WHEN 'autovacuum worker' THEN 'autovacuum'
                          ELSE 'VACUUM' END || ' pid ' || p.pid
                          || coalesce(' (' || p.phase || ')', ''), ', ')
          FROM pg_stat_progress_vacuum p LEFT JOIN pg_stat_activity a ON a.pid = p.pid
         WHERE p.relid = to_regclass(%(table)s)"""
    # relid is visible for any role's vacuum; backend_type tells autovacuum from a person's.
    return _one(plan, sql, {"table": _q(plan, plan.table)})[0]


def checkpoint(
    plan: BackfillPlan,
    run: BackfillRun,
    owner: str,
    *,
    key: list[str],
    filled: int,
    scanned: int,
    size: int,
    lease_s: float,
) -> Readings | None:
    """Move the checkpoint (inside the batch's transaction) and renew the lease; the readings, or
    None when this command no longer holds the run's lease (the batch must roll back)."""
    table = _q(plan, BackfillRun._meta.db_table)
    sql = f"""
        UPDATE {table}
           SET "last_key" = %(key)s::jsonb, "rows_done" = "rows_done" + %(filled)s,
               "keys_scanned" = "keys_scanned" + %(scanned)s, "batches" = "batches" + 1,
               "batch_size" = %(size)s, "rate" = %(rate)s, "eta_s" = %(eta)s,
               "lease_expires_at" = now() + make_interval(secs => %(lease_s)s),
               "updated_at" = clock_timestamp()
         WHERE "id" = %(id)s AND "lease_owner" = %(owner)s
        RETURNING {_readings_sql(waiters=True)}"""  # noqa: S608 (quoted names, values as parameters)
    params = {
        "key": json.dumps(key),
        "filled": filled,
        "scanned": scanned,
        "size": size,
        "rate": run.rate,
        "eta": run.eta_s,
        "lease_s": lease_s,
        "id": run.pk,
        "owner": owner,
    }
    return _readings(_one(plan, sql, params))


def heartbeat(
    plan: BackfillPlan, run: BackfillRun, owner: str, *, renew_s: float | None
) -> Readings | None:
    """The run's status and the health readings, between batches; with ``renew_s`` the lease is
    renewed for that long too. None when this command no longer holds the lease."""
    table = _q(plan, BackfillRun._meta.db_table)
    if renew_s is None:
        sql = f'SELECT {_readings_sql(waiters=False)} FROM {table} WHERE "id" = %(id)s AND "lease_owner" = %(owner)s'  # noqa: S608
    else:
        sql = f"""
            UPDATE {table} SET "lease_expires_at" = now() + make_interval(secs => %(lease_s)s)
             WHERE "id" = %(id)s AND "lease_owner" = %(owner)s
            RETURNING {_readings_sql(waiters=False)}"""  # noqa: S608
    return _readings(_one(plan, sql, {"id": run.pk, "owner": owner, "lease_s": renew_s or 0}))


def _runs(plan: BackfillPlan):
    return BackfillRun.objects.using(plan.database)


def reload(plan: BackfillPlan, run: BackfillRun) -> None:
    """The run as the database has it: after a failure, the checkpoint to go on from."""
    run.refresh_from_db(using=plan.database)


def pauses_save(plan: BackfillPlan, run: BackfillRun) -> None:
    _runs(plan).filter(pk=run.pk).update(pauses=run.pauses, updated_at=timezone.now())


def finish(plan: BackfillPlan, run: BackfillRun, owner: str, longest_ms: float) -> bool:
    """Done, and the lease given up; False when this command no longer held it."""
    return bool(
        _runs(plan)
        .filter(pk=run.pk, lease_owner=owner)
        .update(
            status=BackfillStatus.DONE,
            finished_at=timezone.now(),
            longest_batch_ms=longest_ms,
            eta_s=0,
            lease_owner="",
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
    )


def fail(plan: BackfillPlan, run: BackfillRun, message: str) -> None:
    """Failed with ``message``: a run that a person paused meanwhile stays paused."""
    try:
        _runs(plan).filter(pk=run.pk, status=BackfillStatus.RUNNING).update(
            status=BackfillStatus.FAILED, last_error=message, updated_at=timezone.now()
        )
        _runs(plan).filter(pk=run.pk).exclude(status=BackfillStatus.FAILED).update(
            last_error=message
        )
    except DatabaseError:
        pass  # the connection died with the batch; the run stays as it was and resumes the same way


def event(plan: BackfillPlan, run: BackfillRun, actor: str, action: str, note: str = "") -> None:
    try:
        # A savepoint when called inside a transaction: a failed insert must not abort it.
        with transaction.atomic(using=plan.database):
            BackfillEvent.objects.using(plan.database).create(
                run_id=run.pk, actor=actor[:200], action=action, note=note
            )
    except DatabaseError:
        pass  # the history is for people; the run goes on without it
