"""DATABASES from the environment: connection reuse, pool and timeouts in one place.

``database_settings`` is a plain function of an environment mapping, so every variable and every
bad value can be tested without touching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import StrictEnv
from dbops.pooling import pgbouncer_profile, prepared_statements

APPLICATION_NAME = "django-pg-patterns"


def _pool_options(env: StrictEnv) -> dict[str, Any]:
    min_size = env.int("DB_POOL_MIN_SIZE", default=2, minimum=0)
    max_size = env.int("DB_POOL_MAX_SIZE", default=10, minimum=1)
    if min_size > max_size:
        raise ImproperlyConfigured(
            f"DB_POOL_MIN_SIZE={min_size} is larger than DB_POOL_MAX_SIZE={max_size}."
        )
    timeout = env.float("DB_POOL_TIMEOUT", default=10.0, minimum=0.1)
    return {"min_size": min_size, "max_size": max_size, "timeout": timeout}


def _prepare_threshold(env: StrictEnv) -> int | None:
    """``DB_PREPARE_THRESHOLD``: unset, no prepared statements (Django's default); a number N, psycopg
    prepares a statement on the server once it has run N times (``dbops.pooling.prepared_statements``)."""
    return env.int("DB_PREPARE_THRESHOLD", default=None, minimum=0)


def _pgbouncer(env: StrictEnv, prepare_threshold: int | None) -> bool:
    """``DB_PGBOUNCER``: the profile for PgBouncer in transaction mode (``dbops.pooling``)."""
    pgbouncer = env.bool("DB_PGBOUNCER", default=False)
    if pgbouncer and prepare_threshold is not None:
        raise ImproperlyConfigured(
            "DB_PGBOUNCER=true with DB_PREPARE_THRESHOLD set: named prepared statements break on "
            "PgBouncer before 1.21 in transaction mode; unset DB_PREPARE_THRESHOLD behind the pooler."
        )
    return pgbouncer


def database_settings(
    environ: Mapping[str, str],
    *,
    embedded_url: Callable[[], str] | None = None,
    embedded_replica_url: Callable[[], str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Build ``DATABASES`` (``default`` and, when configured, ``replica``).

    With ``DATABASE_URL`` unset, ``embedded_url()`` starts (or finds) the embedded server, and
    ``embedded_replica_url()`` (``EMBEDDED_PG_REPLICA=true``) its hot standby, unless
    ``DATABASE_REPLICA_URL`` names one.
    """
    env = StrictEnv(environ)
    url = env.str("DATABASE_URL", default="").strip()
    embedded = not url
    if embedded:
        if embedded_url is None:
            raise ImproperlyConfigured("Set the DATABASE_URL environment variable.")
        url = embedded_url()

    use_pool = env.bool("DB_POOL", default=False)
    conn_max_age = 0 if use_pool else env.int("DB_CONN_MAX_AGE", default=60, minimum=0)
    health_checks = env.bool("DB_CONN_HEALTH_CHECKS", default=True)
    statement_timeout_ms = env.int("DB_STATEMENT_TIMEOUT_MS", default=30_000, minimum=0)
    connect_timeout = env.int("DB_CONNECT_TIMEOUT", default=10, minimum=1)
    prepare_threshold = _prepare_threshold(env)
    pool = _pool_options(env) if use_pool else None
    pgbouncer = _pgbouncer(env, prepare_threshold)

    def one(name: str, raw_url: str) -> dict[str, Any]:
        try:
            config = dj_database_url.parse(
                raw_url, conn_max_age=conn_max_age, conn_health_checks=health_checks
            )
        except (ValueError, dj_database_url.UnknownSchemeError) as exc:
            raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
        if config.get("ENGINE") != "django.db.backends.postgresql":
            raise ImproperlyConfigured(
                f"{name} must be a postgres:// URL: this project runs on PostgreSQL only."
            )
        _options_add(
            config,
            connect_timeout,
            statement_timeout_ms,
            prepare_threshold=prepare_threshold,
            pool=pool,
            pgbouncer=pgbouncer,
        )
        return config

    databases = {"default": one("DATABASE_URL", url)}
    replica_url = env.str("DATABASE_REPLICA_URL", default="").strip()
    if not replica_url and embedded and embedded_replica_url is not None:
        replica_url = embedded_replica_url()
    if replica_url:
        databases["replica"] = one("DATABASE_REPLICA_URL", replica_url)
        databases["replica"]["TEST"] = {"MIRROR": "default"}
    return databases


def _options_add(
    config: dict[str, Any],
    connect_timeout: int,
    statement_timeout_ms: int,
    *,
    prepare_threshold: int | None,
    pool: dict[str, Any] | None,
    pgbouncer: bool,
) -> None:
    options = config.setdefault("OPTIONS", {})
    options.setdefault("connect_timeout", connect_timeout)
    options.setdefault("application_name", APPLICATION_NAME)
    # Before the PgBouncer profile, which refuses prepared statements.
    prepared_statements(config, prepare_threshold)
    if pgbouncer:
        pgbouncer_profile(config)
    else:
        # Applied by the server at connection start, so it holds for pooled connections too.
        server_options = f"-c statement_timeout={statement_timeout_ms}"
        options["options"] = (
            f"{options['options']} {server_options}" if "options" in options else server_options
        )
    if pool:
        options["pool"] = dict(pool)
