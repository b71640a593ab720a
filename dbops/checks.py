"""System checks: ``manage.py check --database default`` runs the database-tagged ones.

The migration safety check (``dbops.migration_safety``) needs no database: ``manage.py check``
runs it, and so does ``migrate`` before it applies anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.checks import Error, Tags, Warning, register
from django.db import DatabaseError, connections

from dbops.catalog import connection_limits
from dbops.conf import DEFAULTS, SETTING_NAME, dbops_settings
from dbops.migration_safety import check_migration_safety

# Every migration of the project's own apps, on `manage.py check` and before `migrate` applies any.
register(check_migration_safety, "migrations")


@register()
def check_settings(app_configs=None, **kwargs):
    """``DBOPS`` holds only keys the toolkit knows, each of its default's type."""
    user = dbops_settings.user_settings
    if not isinstance(user, dict):
        return [
            Error(f"{SETTING_NAME} must be a dict, not {type(user).__name__}.", id="dbops.E001")
        ]
    messages = [
        Error(
            f"{SETTING_NAME}[{key!r}] is not a dbops setting.",
            hint="dbops.conf.DEFAULTS lists the settings (docs: the settings reference).",
            id="dbops.E001",
        )
        for key in dbops_settings.unknown_keys()
    ]
    for key, default in DEFAULTS.items():
        if key in user and not _same_kind(user[key], default):
            messages.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] is {user[key]!r}; it must be a "
                    f"{type(default).__name__} like its default {default!r}.",
                    id="dbops.E002",
                )
            )
    return messages


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, int | float):
        return isinstance(value, int | float) and value >= 0
    if isinstance(default, tuple | list | frozenset | set):
        return isinstance(value, tuple | list | frozenset | set)
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))


@dataclass(frozen=True)
class PoolSizing:
    workers: int
    per_worker: int
    max_connections: int
    superuser_reserved: int  # superuser_reserved_connections
    reserved: int  # reserved_connections (PostgreSQL 16+; 0 before)
    margin: int

    @property
    def demand(self) -> int:
        return self.workers * self.per_worker

    @property
    def available(self) -> int:
        return self.max_connections - self.superuser_reserved - self.reserved - self.margin

    @property
    def fits(self) -> bool:
        return self.demand <= self.available


def per_worker_connections(alias: str) -> int:
    """Connections one web worker can hold on ``alias``: the pool's maximum, else one."""
    pool = connections[alias].settings_dict.get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict):
        return pool.get("max_size", 1)
    return 1


def pool_sizing(alias: str = "default") -> PoolSizing:
    limits = connection_limits(alias)
    # Room for migrations, shells, cron jobs and monitoring: a tenth of the server, at least 3.
    margin = max(3, limits.max_connections // 10)
    return PoolSizing(
        workers=dbops_settings.WEB_CONCURRENCY,
        per_worker=per_worker_connections(alias),
        max_connections=limits.max_connections,
        superuser_reserved=limits.superuser_reserved,
        reserved=limits.reserved,
        margin=margin,
    )


@register(Tags.database)
def check_pool_sizing(app_configs=None, databases=None, **kwargs):
    messages = []
    for alias in databases or ():
        try:
            sizing = pool_sizing(alias)
        except DatabaseError as exc:
            messages.append(
                Warning(f"Could not read connection limits of '{alias}': {exc}", id="dbops.W002")
            )
            continue
        if not sizing.fits:
            messages.append(
                Warning(
                    f"Database '{alias}': DBOPS['WEB_CONCURRENCY']={sizing.workers} workers x "
                    f"{sizing.per_worker} connections each = {sizing.demand}, more than the "
                    f"{sizing.available} the server can give ({sizing.max_connections} "
                    f"max_connections - {sizing.superuser_reserved} superuser_reserved_connections - "
                    f"{sizing.reserved} reserved_connections - {sizing.margin} margin).",
                    hint=(
                        "Run fewer web workers, or give each fewer connections (the pool's max_size in "
                        "the database OPTIONS), raise max_connections on the server, or put "
                        "PgBouncer in front of it."
                    ),
                    id="dbops.W001",
                )
            )
    return messages


@register(Tags.database)
def check_pgbouncer_migrations(app_configs=None, databases=None, **kwargs):
    """Through PgBouncer in transaction mode, migrations that build or drop indexes
    concurrently refuse to run: say so before ``migrate`` starts."""
    from dbops.pooling import DIRECT_HINT, behind_pgbouncer

    return [
        Warning(
            f"Database '{alias}' is reached through PgBouncer in transaction mode "
            "(dbops.pooling.pgbouncer_profile): migrations with concurrent index builds or drops "
            "(CREATE/DROP INDEX CONCURRENTLY) need a session setting and refuse to run there.",
            hint=DIRECT_HINT,
            id="dbops.W003",
        )
        for alias in databases or ()
        if behind_pgbouncer(alias)
    ]
