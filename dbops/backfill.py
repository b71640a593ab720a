"""Fill a column in keyset batches on the primary key, one short transaction per batch, resumable.

Each batch is one statement: pick the next ``batch_size`` primary keys after the checkpoint, update
the rows among them that match ``where``; the checkpoint (``dbops.BackfillRun.last_pk``) moves in
the same transaction. So a batch is all or nothing, a killed run resumes exactly after the last
committed batch, and no row is updated twice. No lock is held between batches.

Failure behaviour: a batch that hits a statement or lock timeout, a deadlock or a serialization
failure is retried; a batch that keeps failing, for those or any other reason (a constraint the new
values break, say), is split in half, down to one row. A single row that still fails stops the run
with status ``failed``: the checkpoint is right before that row, the error is recorded, and running
the same command again (after fixing the cause) resumes there.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db import DatabaseError, connections, transaction
from django.db.models import F
from django.utils import timezone

from dbops.models import BackfillRun, BackfillStatus
from dbops.retry import sqlstate

RETRYABLE = {
    "57014": "statement timeout",
    "55P03": "lock timeout",
    "40P01": "deadlock",
    "40001": "serialization failure",
}
TRIES_PER_SIZE = 3
MIN_BATCH, MAX_BATCH = 1, 100_000
START_KEY = -(2**63)


class BackfillError(Exception):
    """The backfill cannot start or cannot go on; the message says why and what to do."""


@dataclass
class BackfillPlan:
    target: str  # app_label.Model.field
    database: str
    table: str
    pk_column: str
    column: str
    source: dict[str, str]  # exactly one of value / from_field / expression
    where: str
    set_sql: str
    params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1000
    target_batch_ms: float = 200
    sleep: float = 0.0
    lock_timeout_ms: int = 2000
    statement_timeout_ms: int = 30_000

    @property
    def options(self) -> dict[str, str]:
        """What the run writes and to which rows: a resumed run must have the same."""
        return {**self.source, "where": self.where}

    def update_sql(self) -> str:
        q = connections[self.database].ops.quote_name
        table, pk, column = q(self.table), q(self.pk_column), q(self.column)
        # Identifiers quoted; set_sql and where are the operator's own SQL (what the command is for),
        # run through a one-statement cursor; values travel as parameters.
        return f"""
WITH bounds AS (
    SELECT max(next_keys.{pk}) AS backfill_upper
      FROM (SELECT {pk} FROM {table} WHERE {pk} > %(after)s ORDER BY {pk} LIMIT %(limit)s) AS next_keys
), filled AS (
    UPDATE {table} SET {column} = {self.set_sql}
      FROM bounds
     WHERE {table}.{pk} > %(after)s AND {table}.{pk} <= bounds.backfill_upper AND ({_escape(self.where)})
    RETURNING 1
)
SELECT (SELECT backfill_upper FROM bounds), (SELECT count(*) FROM filled)""".strip()  # noqa: S608


def _escape(fragment: str) -> str:
    """User SQL goes next to %(name)s placeholders: a literal % must be doubled."""
    return fragment.replace("%", "%%")


def plan_build(
    *,
    model_label: str,
    field_name: str,
    value: str | None = None,
    from_field: str | None = None,
    expression: str | None = None,
    where: str | None = None,
    database: str = "default",
    batch_size: int = 1000,
    target_batch_ms: float = 200,
    sleep: float = 0.0,
    lock_timeout_ms: int = 2000,
    statement_timeout_ms: int = 30_000,
) -> BackfillPlan:
    """Check the request against the models and build the plan; raises BackfillError."""
    if database not in connections:
        raise BackfillError(
            f"Unknown database alias {database!r}: use one of {', '.join(connections)}."
        )
    try:
        model = apps.get_model(model_label)
    except (LookupError, ValueError) as exc:
        raise BackfillError(
            f"Unknown model {model_label!r}: give it as app_label.Model, e.g. orders.Customer."
        ) from exc
    try:
        target = model._meta.get_field(field_name)
    except FieldDoesNotExist as exc:
        raise BackfillError(f"{model_label} has no field {field_name!r}.") from exc
    if not getattr(target, "concrete", False) or target.many_to_many or not target.column:
        raise BackfillError(f"{model_label}.{field_name} is not a column that can be filled.")
    if target.primary_key:
        raise BackfillError(
            f"{model_label}.{field_name} is the primary key: batches are keyed on it, it cannot be filled."
        )
    pk = model._meta.pk
    if pk.get_internal_type() not in {
        "AutoField",
        "BigAutoField",
        "SmallAutoField",
        "IntegerField",
        "BigIntegerField",
    }:
        raise BackfillError(
            f"{model_label} has a non-integer primary key: keyset batches here need an integer key."
        )
    given = [
        name
        for name, v in (("value", value), ("from_field", from_field), ("expression", expression))
        if v is not None
    ]
    if len(given) != 1:
        raise BackfillError(
            "Give exactly one of --value, --from-field or --expression"
            + (f" (got {', '.join(given)})." if given else ".")
        )
    for name, number, low in (
        ("--batch-size", batch_size, 1),
        ("--target-batch-ms", target_batch_ms, 1),
        ("--lock-timeout-ms", lock_timeout_ms, 1),
        ("--statement-timeout-ms", statement_timeout_ms, 1),
        ("--sleep", sleep, 0),
    ):
        if number < low:
            raise BackfillError(f"{name} must be at least {low}.")

    connection = connections[database]
    q = connection.ops.quote_name
    params: dict[str, Any] = {}
    if value is not None:
        try:
            python_value = target.to_python(value)
            target.run_validators(python_value)
        except ValidationError as exc:
            raise BackfillError(
                f"--value {value!r} does not fit {model_label}.{field_name}: {' '.join(exc.messages)}"
            ) from exc
        params["value"] = target.get_db_prep_save(python_value, connection)
        set_sql, source = "%(value)s", {"value": value}
    elif from_field is not None:
        try:
            other = model._meta.get_field(from_field)
        except FieldDoesNotExist as exc:
            raise BackfillError(f"{model_label} has no field {from_field!r} to copy from.") from exc
        if not getattr(other, "column", None):
            raise BackfillError(f"{model_label}.{from_field} is not a column to copy from.")
        set_sql, source = q(other.column), {"from_field": from_field}
    else:
        if not expression.strip():
            raise BackfillError("--expression is empty.")
        set_sql, source = f"({_escape(expression)})", {"expression": expression}
    where_sql = where if where is not None else f"{q(target.column)} IS NULL"
    if not where_sql.strip():
        raise BackfillError(
            "--where is empty: leave it out to fill the NULL rows, or say which rows."
        )
    return BackfillPlan(
        target=f"{model._meta.app_label}.{model.__name__}.{target.name}",
        database=database,
        table=model._meta.db_table,
        pk_column=pk.column,
        column=target.column,
        source=source,
        where=where_sql,
        set_sql=set_sql,
        params=params,
        batch_size=min(max(batch_size, MIN_BATCH), MAX_BATCH),
        target_batch_ms=target_batch_ms,
        sleep=sleep,
        lock_timeout_ms=lock_timeout_ms,
        statement_timeout_ms=statement_timeout_ms,
    )


def _cursor(database: str) -> psycopg.Cursor:
    """A server-side-binding cursor: one statement per call, so SQL given as --expression or --where
    cannot smuggle in a second one."""
    connection = connections[database]
    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def plan_check(plan: BackfillPlan) -> None:
    """Have PostgreSQL parse and plan the batch statement (EXPLAIN, nothing runs); BackfillError if it refuses."""
    try:
        with transaction.atomic(using=plan.database), _cursor(plan.database) as cursor:
            cursor.execute(
                f"EXPLAIN {plan.update_sql()}", {**plan.params, "after": START_KEY, "limit": 1}
            )
    except (DatabaseError, psycopg.Error) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise BackfillError(
            f"PostgreSQL rejects this backfill: {message}. Check --expression, --value and --where."
        ) from exc


def rows_to_fill(plan: BackfillPlan) -> int:
    q = connections[plan.database].ops.quote_name
    with _cursor(plan.database) as cursor:
        cursor.execute(f"SELECT count(*) FROM {q(plan.table)} WHERE ({plan.where})")  # noqa: S608 (as above)
        return cursor.fetchone()[0]


def key_range(plan: BackfillPlan) -> tuple[int | None, int | None]:
    q = connections[plan.database].ops.quote_name
    with _cursor(plan.database) as cursor:
        cursor.execute(
            f"SELECT min({q(plan.pk_column)}), max({q(plan.pk_column)}) FROM {q(plan.table)}"  # noqa: S608 (quoted)
        )
        return cursor.fetchone()


@dataclass
class Progress:
    run: BackfillRun
    rate: float  # rows per second over the run so far
    fraction: float  # of the key range covered
    eta_s: float | None


def _run_acquire(plan: BackfillPlan, *, restart: bool) -> BackfillRun:
    runs = BackfillRun.objects.using(plan.database)
    unfinished = runs.filter(
        target=plan.target,
        database=plan.database,
        status__in=[BackfillStatus.RUNNING, BackfillStatus.FAILED],
    ).first()
    if unfinished is not None and restart:
        unfinished.status = BackfillStatus.ABANDONED
        unfinished.finished_at = timezone.now()
        unfinished.save(using=plan.database, update_fields=["status", "finished_at", "updated_at"])
        unfinished = None
    if unfinished is not None:
        if unfinished.options != plan.options:
            raise BackfillError(
                f"An unfinished run (#{unfinished.pk}, {unfinished.rows_done:,} rows done) of {plan.target} used "
                f"different options: {unfinished.options}. Run it again with those options to resume, "
                "or pass --restart to abandon it and start over."
            )
        unfinished.status = BackfillStatus.RUNNING
        unfinished.last_error = ""
        unfinished.batch_size = plan.batch_size
        unfinished.save(
            using=plan.database, update_fields=["status", "last_error", "batch_size", "updated_at"]
        )
        return unfinished
    _, max_pk = key_range(plan)
    return runs.create(
        target=plan.target,
        database=plan.database,
        options=plan.options,
        last_pk=None,
        max_pk=max_pk,
        batch_size=plan.batch_size,
    )


def _advisory_key(target: str) -> str:
    return f"dbops.backfill:{target}"


def backfill(
    plan: BackfillPlan,
    *,
    restart: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> BackfillRun:
    """Run (or resume) the backfill to the end; returns the finished run. Raises BackfillError."""
    plan_check(plan)
    with _cursor(plan.database) as cursor:
        # One run per target at a time, across processes; released when the session ends, even on kill.
        cursor.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", [_advisory_key(plan.target)]
        )
        if not cursor.fetchone()[0]:
            raise BackfillError(
                f"Another backfill of {plan.target} is running right now; wait for it to finish."
            )
    try:
        run = _run_acquire(plan, restart=restart)
        return _batches(plan, run, progress)
    finally:
        try:
            with _cursor(plan.database) as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                    [_advisory_key(plan.target)],
                )
        except (DatabaseError, psycopg.Error):
            pass  # the connection is gone, and the lock with it


def _batch(
    plan: BackfillPlan, run: BackfillRun, after: int, size: int, elapsed_ms_holder: list
) -> tuple[int | None, int]:
    sql = plan.update_sql()
    with transaction.atomic(using=plan.database):
        with _cursor(plan.database) as cursor:
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                [f"{plan.lock_timeout_ms}ms", f"{plan.statement_timeout_ms}ms"],
            )
            started = time.perf_counter()
            cursor.execute(sql, {**plan.params, "after": after, "limit": size})
            upper, filled = cursor.fetchone()
            elapsed_ms_holder[0] = (time.perf_counter() - started) * 1000
        if upper is not None:
            # The checkpoint commits with the batch: both happen, or neither.
            BackfillRun.objects.using(plan.database).filter(pk=run.pk).update(
                last_pk=upper,
                rows_done=F("rows_done") + filled,
                batches=F("batches") + 1,
                batch_size=size,
                updated_at=timezone.now(),
            )
    return upper, filled


def _batches(plan: BackfillPlan, run: BackfillRun, progress) -> BackfillRun:
    started = time.monotonic()
    rows_at_start = run.rows_done
    after = run.last_pk if run.last_pk is not None else START_KEY
    min_pk, _ = key_range(plan)
    size = plan.batch_size
    tries = 0
    longest = run.longest_batch_ms
    while True:
        holder = [0.0]
        try:
            upper, filled = _batch(plan, run, after, size, holder)
        except (DatabaseError, psycopg.Error) as exc:
            tries += 1
            if sqlstate(exc) in RETRYABLE and tries < TRIES_PER_SIZE:
                BackfillRun.objects.using(plan.database).filter(pk=run.pk).update(
                    retries=F("retries") + 1
                )
                time.sleep(random.uniform(0.5, 1.0) * 0.1 * 2**tries)
                continue
            if size > MIN_BATCH:
                # Halve: a timeout may pass with fewer rows, and a bad row is narrowed down to one,
                # so the rows before it are filled and the checkpoint stops right before it.
                size = max(MIN_BATCH, size // 2)
                tries = 0
                BackfillRun.objects.using(plan.database).filter(pk=run.pk).update(
                    splits=F("splits") + 1
                )
                continue
            _fail(plan, run, after, exc)
        tries = 0
        elapsed_ms = holder[0]
        longest = max(longest, elapsed_ms)
        run.refresh_from_db(using=plan.database)
        if upper is None:
            break
        after = upper
        if elapsed_ms > 0:
            # Toward the target duration, at most doubling or halving per batch.
            wanted = size * plan.target_batch_ms / elapsed_ms
            size = int(min(MAX_BATCH, max(MIN_BATCH, size / 2, min(size * 2, wanted))))
        if progress is not None:
            duration = max(time.monotonic() - started, 1e-6)
            rate = (run.rows_done - rows_at_start) / duration
            fraction = _fraction(min_pk, run.max_pk, after)
            eta = duration / fraction * (1 - fraction) if 0 < fraction < 1 else None
            progress(Progress(run=run, rate=rate, fraction=fraction, eta_s=eta))
        if plan.sleep:
            time.sleep(plan.sleep)
    run.status = BackfillStatus.DONE
    run.finished_at = timezone.now()
    run.longest_batch_ms = longest
    run.save(
        using=plan.database,
        update_fields=["status", "finished_at", "longest_batch_ms", "updated_at"],
    )
    return run


def _fraction(min_pk: int | None, max_pk: int | None, done_to: int) -> float:
    if min_pk is None or max_pk is None or max_pk <= min_pk:
        return 1.0
    return max(0.0, min(1.0, (done_to - min_pk + 1) / (max_pk - min_pk + 1)))


def _fail(plan: BackfillPlan, run: BackfillRun, after: int, exc: Exception):
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    where = "at the first row" if after == START_KEY else f"at the row after primary key {after}"
    try:
        BackfillRun.objects.using(plan.database).filter(pk=run.pk).update(
            status=BackfillStatus.FAILED, last_error=message, updated_at=timezone.now()
        )
    except DatabaseError:
        pass  # the connection died with the batch; the run stays 'running' and resumes the same way
    raise BackfillError(
        f"The backfill stopped {where}: {message}. Run #{run.pk} keeps its checkpoint; fix the cause and run "
        "the same command again to resume."
    ) from exc
