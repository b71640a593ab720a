"""Keep time-partitioned tables ready: partitions created ahead, old ones detached for archiving.

The tables and their policy come from ``DBOPS["PARTITIONED_TABLES"]`` (``dbops.conf``)::

    DBOPS = {"PARTITIONED_TABLES": {"app_event": {"interval": "day", "ahead": 7, "retention": 90}}}

- **Ahead**: partitions exist for the current interval and ``ahead`` intervals past it. There is
  no DEFAULT partition: an INSERT whose partition is missing fails, so this runs from cron (and on
  every ``migrate``, creating only), and ``db_doctor`` / ``/health/ready`` warn when fewer than
  ``DBOPS["PARTITIONS_MIN_AHEAD"]`` remain. A DEFAULT partition would turn a missed run into rows
  that then block creating their own partition, and make every new partition scan it.
- **New partitions** are created as plain tables (``LIKE`` the parent) and then attached: ``ATTACH
  PARTITION`` takes SHARE UPDATE EXCLUSIVE on the parent, which blocks neither reads nor writes
  (``CREATE TABLE ... PARTITION OF`` would take ACCESS EXCLUSIVE). Its foreign keys take SHARE ROW
  EXCLUSIVE on the tables they reference for a moment: under a lock timeout, retried.
- **Retention**: partitions whose range ended more than ``retention`` intervals before the current
  one are detached with ``DETACH PARTITION ... CONCURRENTLY`` (PostgreSQL 14+; not in a transaction)
  and left as plain tables for archiving; nothing is dropped. A detach that was interrupted is
  finished with ``DETACH PARTITION ... FINALIZE``. ``retention`` None keeps every partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import OperationalError, connections

from dbops.conf import dbops_settings
from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.partitioning import catalog
from dbops.partitioning.convert import Timeouts, short_transaction
from dbops.partitioning.ranges import (
    Interval,
    PartitioningError,
    bound_literal,
    interval_get,
    partition_name,
)
from dbops.retry import call_with_retries
from dbops.timeouts import lock_timeout, statement_timeout

logger = logging.getLogger("dbops.partitioning")

POLICY_KEYS = {"interval", "ahead", "retention"}


@dataclass(frozen=True)
class Policy:
    table: str
    interval: Interval
    ahead: int
    retention: int | None  # intervals kept attached before the current one; None: all

    def describe(self) -> str:
        unit = self.interval.unit
        keep = (
            "keep every partition attached"
            if self.retention is None
            else f"detach partitions that ended more than {self.retention} {unit}(s) before the current one"
        )
        return f"{self.table}: by {unit}, the current {unit} and {self.ahead} ahead; {keep}"


def policies() -> list[Policy]:
    """The registered tables' policies; PartitioningError naming a bad entry."""
    registered = dbops_settings.PARTITIONED_TABLES
    if not isinstance(registered, dict):
        raise PartitioningError('DBOPS["PARTITIONED_TABLES"] must be a dict of table -> policy.')
    found = []
    for table, entry in registered.items():
        entry = entry or {}
        where = f'DBOPS["PARTITIONED_TABLES"][{table!r}]'
        if not isinstance(entry, dict) or set(entry) - POLICY_KEYS:
            raise PartitioningError(
                f"{where} must be a dict with keys among {sorted(POLICY_KEYS)}."
            )
        ahead = entry.get("ahead", dbops_settings.PARTITIONS_AHEAD)
        retention = entry.get("retention")
        if not isinstance(ahead, int) or ahead < 1:
            raise PartitioningError(f"{where}['ahead'] must be a whole number >= 1, not {ahead!r}.")
        if retention is not None and (not isinstance(retention, int) or retention < 0):
            raise PartitioningError(f"{where}['retention'] must be None or a whole number >= 0.")
        interval = interval_get(entry.get("interval", "month"))
        found.append(Policy(table, interval, ahead, retention))
    return found


@dataclass(frozen=True)
class Action:
    kind: str  # "create", "detach" or "finalize" (an interrupted detach)
    table: str
    partition: str
    start: datetime | None = None
    end: datetime | None = None

    def describe(self) -> str:
        if self.kind == "create":
            return (
                f"create {self.partition} for [{self.start:%Y-%m-%d}, {self.end:%Y-%m-%d}) and "
                f"attach it to {self.table}"
            )
        if self.kind == "detach":
            return f"detach {self.partition} from {self.table} CONCURRENTLY (kept as a plain table)"
        return f"finish the interrupted detach of {self.partition} from {self.table} (FINALIZE)"


def _covered(parts: list[catalog.Partition], moment: datetime) -> bool:
    return any(p.start is not None and p.start <= moment < p.end for p in parts if p.end)


def plan(connection, policy: Policy, *, now: datetime | None = None) -> list[Action]:
    """What the policy asks of the table now; empty for a table that is not partitioned (yet)."""
    if catalog.relkind(connection, policy.table) != "p":
        return []
    now = now or datetime.now(UTC)
    unit = policy.interval
    current = unit.floor(now)
    parts = catalog.partitions(connection, policy.table)
    actions = []
    for step in range(policy.ahead + 1):
        start = unit.shift(current, step)
        if not _covered(parts, start):
            name = partition_name(policy.table, unit, start)
            actions.append(Action("create", policy.table, name, start, unit.shift(start)))
    for part in parts:
        if part.detach_pending:
            actions.append(Action("finalize", policy.table, part.name))
        elif policy.retention is not None and part.end is not None:
            if part.end <= unit.shift(current, -policy.retention):
                actions.append(Action("detach", policy.table, part.name, part.start, part.end))
    return actions


def _create(connection, action: Action, timeouts: Timeouts) -> None:
    q = connection.ops.quote_name
    parent, partition = q(action.table), q(action.partition)
    if catalog.relkind(connection, action.partition) is None:
        with connection.cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
                "INCLUDING STORAGE INCLUDING COMMENTS)"
            )

    def attach():
        with connection.cursor() as cursor:
            cursor.execute(
                f"ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM "
                f"({bound_literal(action.start)}) TO ({bound_literal(action.end)})"
            )

    short_transaction(connection, attach, what=f"attaching {action.partition}", timeouts=timeouts)


def _detach(connection, action: Action, timeouts: Timeouts) -> None:
    """DETACH ... CONCURRENTLY (or FINALIZE): outside a transaction, under the lock timeout.
    Its first transaction commits before it waits for the queries using the table; a timeout
    after that leaves the partition pending, and the next attempt finishes it with FINALIZE."""
    q = connection.ops.quote_name

    def attempt():
        pending = any(
            p.detach_pending and p.name == action.partition
            for p in catalog.partitions(connection, action.table)
        )
        how = "FINALIZE" if pending else "CONCURRENTLY"
        with (
            lock_timeout(timeouts.lock_timeout_ms, using=connection.alias),
            statement_timeout(0, using=connection.alias),
            connection.cursor() as cursor,
        ):
            cursor.execute(
                f"ALTER TABLE {q(action.table)} DETACH PARTITION {q(action.partition)} {how}"
            )

    try:
        call_with_retries(
            attempt,
            attempts=timeouts.attempts,
            retryable={LOCK_NOT_AVAILABLE},
            base_delay=0.2,
            max_delay=5.0,
            what=f"detaching {action.partition}",
        )
    except OperationalError as exc:
        if sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        raise PartitioningError(
            f"Detaching {action.partition}: could not get its locks within "
            f"{timeouts.lock_timeout_ms} ms in {timeouts.attempts} attempts (long transactions on "
            f"{action.table}: `manage.py db_doctor`). Run partitions_maintain again to finish it."
        ) from exc


def apply(connection, action: Action, *, timeouts: Timeouts | None = None) -> None:
    timeouts = timeouts or Timeouts(dbops_settings.PARTITIONS_LOCK_TIMEOUT_MS)
    if action.kind == "create":
        _create(connection, action, timeouts)
    else:
        _detach(connection, action, timeouts)
    logger.info("%s", action.describe())


def create_ahead(*, using: str = "default") -> list[Action]:
    """Only the missing partitions ahead, for every registered table (what ``migrate`` runs)."""
    connection = connections[using]
    done = []
    for policy in policies():
        for action in plan(connection, policy):
            if action.kind == "create":
                apply(connection, action)
                done.append(action)
    return done


def create_ahead_after_migrate(*, using: str = "default", **kwargs) -> None:
    """``post_migrate`` receiver: ``create_ahead`` unless DBOPS["PARTITIONS_CREATE_ON_MIGRATE"]
    is off (or nothing is registered)."""
    if dbops_settings.PARTITIONS_CREATE_ON_MIGRATE and dbops_settings.PARTITIONED_TABLES:
        created = create_ahead(using=using)
        if created:
            logger.info("created partitions ahead: %s", ", ".join(a.partition for a in created))


def ahead_report(*, using: str = "default", now: datetime | None = None) -> list[dict]:
    """Per registered table: how many intervals past the current one have partitions, and
    whether that is at least ``DBOPS["PARTITIONS_MIN_AHEAD"]`` (the current one included)."""
    connection = connections[using]
    now = now or datetime.now(UTC)
    minimum = dbops_settings.PARTITIONS_MIN_AHEAD
    report = []
    for policy in policies():
        if catalog.relkind(connection, policy.table) != "p":
            report.append({"table": policy.table, "ok": True, "partitioned": False})
            continue
        parts = catalog.partitions(connection, policy.table)
        unit, start = policy.interval, policy.interval.floor(now)
        ahead = -1
        while _covered(parts, start) and ahead < policy.ahead + 1000:
            ahead, start = ahead + 1, unit.shift(start)
        report.append(
            {
                "table": policy.table,
                "ok": ahead >= minimum,
                "partitioned": True,
                "ahead": max(ahead, 0),
                "current_covered": ahead >= 0,
                "covered_until": start.isoformat() if ahead >= 0 else None,
                "minimum": minimum,
            }
        )
    return report
