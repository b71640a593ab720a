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
    # The session key holding "read from the primary until" (a Unix time) after a write whose WAL
    # position could not be read: the lag ceiling from then, plus one health interval.
    "SESSION_PRIMARY_UNTIL_KEY": "_dbops_primary_until",
    # Queries slower than this (milliseconds) are logged with their SQL by the "dbops" logger.
    "SLOW_QUERY_MS": 500,
    # Web worker processes, for the pool-sizing check (dbops.W001): workers x connections per
    # worker must fit the server's max_connections.
    "WEB_CONCURRENCY": 1,
    # /health/ready shows its details to staff and to probes sending this token (empty: staff only).
    "HEALTH_TOKEN": "",
    # Unapplied migrations make /health/ready answer 503 (off: they are reported, not fatal).
    "HEALTH_FAIL_ON_PENDING_MIGRATIONS": False,
    # The pages dbops renders: the 503 page while the database is unreachable
    # (DatabaseUnavailableMiddleware) and the /health/ page. dbops ships both, standalone; a
    # project restyles them with its own template of the same name, or names another here.
    "UNAVAILABLE_TEMPLATE": "dbops/503.html",
    "HEALTH_STATUS_TEMPLATE": "dbops/health/status.html",
    # A service decorated with @service_transaction (dbops.transactions) waits at most this long
    # (milliseconds) for any row or table lock; then its transaction is aborted and run again, up
    # to its attempts. A transaction stuck elsewhere costs a caller seconds, not the whole
    # statement timeout. Transaction-local (SET LOCAL): safe behind PgBouncer.
    "SERVICE_LOCK_TIMEOUT_MS": 2000,
    # manage.py migrate (dbops.migration_guard) sets the timeouts of every statement it runs by the
    # lock the statement takes. A statement whose lock blocks reads or writes (ACCESS EXCLUSIVE,
    # SHARE, SHARE ROW EXCLUSIVE...) waits at most this long for it: while it waits, every query
    # on the table queues behind it.
    "MIGRATION_LOCK_TIMEOUT_MS": 3000,
    # ... and is tried this many times in all; inside an atomic migration the whole migration is
    # rolled back and run again. Between attempts a pause doubling from the delay below (half to
    # all of it, at most 30 s): as long as the lock timeout, so the writes that queued behind the
    # migration get through before it queues them again.
    "MIGRATION_LOCK_ATTEMPTS": 5,
    "MIGRATION_RETRY_DELAY_MS": 3000,
    # Once it has the lock, such a statement may run (and hold the lock) at most this long; so
    # may every later statement of the same transaction, which holds the lock until it commits.
    # CONCURRENTLY builds and VALIDATE CONSTRAINT block no one: no statement or lock timeout.
    "MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS": 10_000,
    # One migrate at a time per database: a second one waits this long for the first to finish
    # (0: stops at once), naming it.
    "MIGRATE_LOCK_WAIT_MS": 0,
    # The safety check (dbops.migration_safety) leaves alone every migration of an app up to and
    # including the one named here, {"app_label": "0042_last_before_adoption"}: migrations that
    # predate the check (or a new rule) are not judged again (strong_migrations' start_after).
    "MIGRATION_SAFETY_BASELINE": {},
    # /health/ready and db_doctor also ask every cache that is not local to the process (Redis,
    # Memcached) for a round trip; one that fails makes readiness "degraded", never unready.
    "HEALTH_CHECK_CACHES": True,
    # Warnings of /health/ready and findings of db_doctor: a sequence (or the integer column it
    # feeds) past this share of its limit; a database whose oldest unfrozen transaction ID is
    # older than this (wraparound stops writes at about 2.1 billion; autovacuum freezes from
    # 200 million); an index whose estimated bloat passes this share and this size (db_doctor).
    "SEQUENCE_WARN_RATIO": 0.75,
    "XID_AGE_WARN": 1_000_000_000,
    "INDEX_BLOAT_WARN_RATIO": 0.5,
    "INDEX_BLOAT_MIN_BYTES": 10 * 1024 * 1024,
    # backfill_column pauses between batches while the database is unhealthy; each has a command
    # flag for one run. A session waited longer than this (ms) behind a batch's row locks: the run
    # pauses BACKFILL_LOCK_WAIT_PAUSE_S and halves its batch (0: never).
    "BACKFILL_MAX_LOCK_WAIT_MS": 100,
    "BACKFILL_LOCK_WAIT_PAUSE_S": 1.0,
    # While a VACUUM (autovacuum's or a person's) works on the table being filled.
    "BACKFILL_PAUSE_ON_VACUUM": True,
    # While the server generates WAL faster than this, in bytes per second over the last second
    # (0: never; the right ceiling is what the replicas and the WAL archive keep up with).
    "BACKFILL_MAX_WAL_BYTES_PER_S": 0,
    # How often a paused run (by a person or by a health indicator) looks again, in seconds.
    "BACKFILL_POLL_S": 0.25,
    # /health/metrics in Prometheus text format, and the counters behind it (off: a 404, and no
    # counting on the query path).
    "METRICS_ENABLED": True,
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


_EMPTY: dict[str, Any] = {}


class DbopsSettings:
    """``dbops_settings.NAME``: the project's ``DBOPS[NAME]``, else the default."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self._source: object = None

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, SETTING_NAME, None) or _EMPTY

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(
                f"'{name}' is not a dbops setting (dbops.conf.DEFAULTS lists them)"
            )
        user = self.user_settings
        # The project's dict replaced by any means (override_settings, a test deleting it, a
        # settings module reloaded): forget what was read from the old one.
        if user is not self._source:
            self._cache.clear()
            self._source = user
        if name not in self._cache:
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def unknown_keys(self) -> list[str]:
        return sorted(set(self.user_settings) - set(DEFAULTS))

    def reload(self) -> None:
        self._cache.clear()
        self._source = None


dbops_settings = DbopsSettings()


def _reload(*, setting: str, **kwargs) -> None:
    if setting == SETTING_NAME:
        dbops_settings.reload()


setting_changed.connect(_reload, dispatch_uid="dbops.conf.reload")
