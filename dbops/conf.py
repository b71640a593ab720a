"""The toolkit's settings: one ``DBOPS`` dict in the project's settings, every default here.

A project sets only what it wants to change::

    DBOPS = {"SLOW_QUERY_MS": 250, "REPLICA_MAX_LAG_MS": 1000}

and everything in ``dbops`` reads ``dbops_settings.SLOW_QUERY_MS``, never ``django.conf.settings``
at the call site (the shape of django-debug-toolbar's ``DEBUG_TOOLBAR_CONFIG`` and DRF's
``api_settings``). Values are read when first used and again after ``override_settings`` or
pytest-django's ``settings`` fixture changes ``DBOPS``. A key the toolkit does not know is an error
of the system check ``dbops.E001``, so a typo never silently keeps a default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

SETTING_NAME = "DBOPS"

DEFAULTS: dict[str, Any] = {
    # Database aliases: where writes, transactions and migrations go, and the optional read replica
    # (routing is on only when DATABASES has this alias).
    "PRIMARY_ALIAS": "default",
    "REPLICA_ALIAS": "replica",
    # Past this replica lag (WAL not yet replayed, in milliseconds) every read goes to the primary;
    # backfill_column pauses past it too (--max-replica-lag-ms).
    "REPLICA_MAX_LAG_MS": 2000,
    # Apps whose models are always read from the primary: the session holds the WAL position that
    # read-your-writes needs, and the migration recorder must see the primary's state.
    "PRIMARY_ONLY_APPS": ("sessions", "migrations"),
    # The session key holding the WAL position of a user's last write (read-your-writes).
    "SESSION_LSN_KEY": "_dbops_wal_lsn",
    # Queries slower than this (milliseconds) are logged with their SQL by the "dbops" logger.
    "SLOW_QUERY_MS": 500,
    # Web worker processes, for the pool-sizing check (dbops.W001): workers x connections per
    # worker must fit the server's max_connections.
    "WEB_CONCURRENCY": 1,
    # /health/ready shows its details to staff and to probes sending this token (empty: staff only).
    "HEALTH_TOKEN": "",
    # Unapplied migrations make /health/ready answer 503 (off: they are reported, not fatal).
    "HEALTH_FAIL_ON_PENDING_MIGRATIONS": False,
    # Tables kept by `manage.py partitions_maintain` (dbops.partitioning.maintain), and watched by
    # db_doctor and /health/ready: {"table": {"interval": "month", "ahead": 3, "retention": None}},
    # every key optional. "ahead": intervals with a partition past the current one (default
    # PARTITIONS_AHEAD); "retention": intervals kept attached before the current one, older ones
    # detached CONCURRENTLY and left for archiving (None: keep every partition).
    "PARTITIONED_TABLES": {},
    "PARTITIONS_AHEAD": 3,
    # db_doctor and /health/ready warn when a table has fewer partitions than this past the current one.
    "PARTITIONS_MIN_AHEAD": 1,
    # Lock timeout of each ATTACH / DETACH PARTITION (retried with backoff).
    "PARTITIONS_LOCK_TIMEOUT_MS": 1000,
    # `migrate` also creates the missing partitions ahead (never detaches), so a database that is
    # migrated at least once every `ahead` intervals never runs out, even without the cron job.
    "PARTITIONS_CREATE_ON_MIGRATE": True,
}


class DbopsSettings:
    """``dbops_settings.NAME``: the project's ``DBOPS[NAME]``, else the default."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, SETTING_NAME, None) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(
                f"'{name}' is not a dbops setting (dbops.conf.DEFAULTS lists them)"
            )
        if name not in self._cache:
            self._cache[name] = self.user_settings.get(name, DEFAULTS[name])
        return self._cache[name]

    def unknown_keys(self) -> list[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))

    def reload(self) -> None:
        self._cache.clear()


dbops_settings = DbopsSettings()


def _reload(*, setting: str, **kwargs) -> None:
    if setting == SETTING_NAME:
        dbops_settings.reload()


setting_changed.connect(_reload, dispatch_uid="dbops.conf.reload")
