"""What a statement does to other sessions, read from its text: the class that picks its timeouts.

``manage.py migrate`` (``dbops.migration_guard``) sets the timeouts of every statement it runs by
the class found here. The classes, by the lock the statement takes:

- ``BLOCKING``: DDL whose lock blocks reads or writes: ``ALTER TABLE`` (ACCESS EXCLUSIVE, or SHARE
  ROW EXCLUSIVE for a foreign key), ``CREATE INDEX`` (SHARE), ``DROP``, ``CREATE TABLE``,
  ``RENAME``, ``TRUNCATE``, ``LOCK``, ``CLUSTER``, ``VACUUM FULL``, ``REFRESH MATERIALIZED VIEW``...
  While it waits for its lock, every query on the table queues behind it: a short lock timeout,
  retried, and a statement timeout bounding how long it holds the lock.
- ``NON_BLOCKING``: takes only locks that let reads and writes go on: ``CREATE``/``DROP``/
  ``REINDEX ... CONCURRENTLY``, ``DETACH PARTITION ... CONCURRENTLY``, ``ALTER TABLE ... VALIDATE
  CONSTRAINT`` (SHARE UPDATE EXCLUSIVE), ``ANALYZE``, ``VACUUM``, ``REFRESH MATERIALIZED VIEW
  CONCURRENTLY``. They may wait a long time (a concurrent build waits for every transaction older
  than it, anywhere in the database) and scan for a long time: no statement timeout and no lock
  timeout, so a finished build is never thrown away.
- ``DATA``: ``SELECT``, ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``COPY``: row locks only.
- ``CONTROL``: ``SET``, ``SHOW``, ``BEGIN``, ``COMMIT``, savepoints...: left as they are.

``transactional`` is False for statements PostgreSQL refuses inside a transaction block (the
``CONCURRENTLY`` forms but ``REFRESH``, ``VACUUM``, ``CREATE DATABASE``, ``ALTER SYSTEM``...): their
timeouts can only be session settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    BLOCKING = "blocking"
    NON_BLOCKING = "non-blocking"
    DATA = "data"
    CONTROL = "control"


@dataclass(frozen=True)
class StatementClass:
    kind: Kind
    transactional: bool = True


_COMMENTS = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)+", re.DOTALL)
_WORDS = re.compile(r"[A-Za-z_]+")

CONTROL_WORDS = frozenset(
    {
        "SET",
        "RESET",
        "SHOW",
        "BEGIN",
        "START",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT",
        "RELEASE",
        "PREPARE",
        "DEALLOCATE",
        "DISCARD",
        "LISTEN",
        "NOTIFY",
        "UNLISTEN",
        "FETCH",
        "MOVE",
        "CLOSE",
        "DECLARE",
        "EXPLAIN",
    }
)
DATA_WORDS = frozenset(
    {"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "WITH", "VALUES", "TABLE", "COPY", "CALL"}
)
_VALIDATE_ONLY = re.compile(
    r"\AALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?:\"[^\"]+\"|[^\s\"]+)(?:\.(?:\"[^\"]+\"|"
    r"[^\s\"]+))?\s+VALIDATE\s+CONSTRAINT\s+(?:\"[^\"]+\"|[^\s\";]+)\s*;?\s*\Z",
    re.IGNORECASE,
)
_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", re.IGNORECASE)
_VACUUM_FULL = re.compile(r"\AVACUUM\s*(?:\(\s*[^)]*\bFULL\b|\s+FULL\b)", re.IGNORECASE)
_REINDEX_WIDE = re.compile(r"\AREINDEX\s*(?:\([^)]*\)\s*)?(?:DATABASE|SYSTEM)\b", re.IGNORECASE)
_NOT_IN_TRANSACTION = re.compile(
    r"\A(?:CREATE|DROP)\s+(?:DATABASE|TABLESPACE|SUBSCRIPTION)\b|\AALTER\s+SYSTEM\b",
    re.IGNORECASE,
)


def statement_text(sql: object) -> str:
    """The statement without leading whitespace and comments."""
    return _COMMENTS.sub("", str(sql), count=1)


def classify(sql: object) -> StatementClass:
    text = statement_text(sql)
    words = _WORDS.findall(text[:200].upper())
    first = words[0] if words else ""
    if first in CONTROL_WORDS or not first:
        return StatementClass(Kind.CONTROL)
    if first in DATA_WORDS:
        return StatementClass(Kind.DATA)
    if first == "VACUUM":
        kind = Kind.BLOCKING if _VACUUM_FULL.match(text) else Kind.NON_BLOCKING
        return StatementClass(kind, transactional=False)
    if first == "ANALYZE":
        return StatementClass(Kind.NON_BLOCKING)
    if _CONCURRENTLY.search(text[:400]):
        # REFRESH MATERIALIZED VIEW CONCURRENTLY may run in a transaction; the others may not.
        return StatementClass(Kind.NON_BLOCKING, transactional=first == "REFRESH")
    if _VALIDATE_ONLY.match(text):
        return StatementClass(Kind.NON_BLOCKING)
    if _REINDEX_WIDE.match(text) or _NOT_IN_TRANSACTION.match(text):
        return StatementClass(Kind.BLOCKING, transactional=False)
    if first == "CLUSTER" and len(words) == 1:
        return StatementClass(Kind.BLOCKING, transactional=False)
    return StatementClass(Kind.BLOCKING)
