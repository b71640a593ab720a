"""Time ranges of partitions, and the names the toolkit gives tables, indexes and sequences.

Partitions are half-open ranges ``[start, end)`` of one interval (a day, a month or a year), on
UTC boundaries, so a partition's range never depends on a session's ``TimeZone``. A partition is
named after its table and its start: ``shop_event_p2026_11``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dbops.exceptions import DbopsError

MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1


class PartitioningError(DbopsError):
    """A partitioning step cannot go on; the message says why and what to do."""


def name_for(base: str, suffix: str = "") -> str:
    """``base + suffix``, or, when that is longer than PostgreSQL keeps, ``base`` shortened with a
    hash of it, so two long names never end up the same after truncation."""
    name = base + suffix
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.md5(base.encode(), usedforsecurity=False).hexdigest()[:8]
    keep = MAX_NAME_BYTES - len(suffix.encode()) - len(digest) - 1
    return base.encode()[:keep].decode(errors="ignore") + "_" + digest + suffix


@dataclass(frozen=True)
class Interval:
    """One partition's length: ``day``, ``month`` or ``year``."""

    unit: str

    def floor(self, moment: datetime) -> datetime:
        """The start of the interval holding ``moment`` (UTC)."""
        moment = moment.astimezone(UTC)
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        if self.unit in ("month", "year"):
            start = start.replace(day=1)
        if self.unit == "year":
            start = start.replace(month=1)
        return start

    def shift(self, start: datetime, steps: int = 1) -> datetime:
        """The start ``steps`` intervals after (or, negative, before) the start ``start``."""
        if self.unit == "day":
            return start + timedelta(days=steps)
        if self.unit == "year":
            return start.replace(year=start.year + steps)
        months = start.year * 12 + start.month - 1 + steps
        return start.replace(year=months // 12, month=months % 12 + 1)

    def label(self, start: datetime) -> str:
        return start.strftime({"day": "%Y_%m_%d", "month": "%Y_%m", "year": "%Y"}[self.unit])

    def starts(self, first: datetime, last: datetime) -> list[datetime]:
        """The starts of every interval from the one holding ``first`` to the one holding ``last``."""
        start, end = self.floor(first), self.floor(last)
        starts = []
        while start <= end:
            starts.append(start)
            start = self.shift(start)
        return starts


INTERVALS = ("day", "month", "year")


def interval_get(unit: str) -> Interval:
    if unit not in INTERVALS:
        raise PartitioningError(
            f"Unknown partition interval {unit!r}: use one of {', '.join(INTERVALS)}."
        )
    return Interval(unit)


def partition_name(table: str, interval: Interval, start: datetime) -> str:
    return name_for(table, f"_p{interval.label(start)}")


def bound_literal(moment: datetime) -> str:
    """A timestamptz literal with its offset, read the same whatever the session's TimeZone."""
    return "'" + moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00") + "'"
