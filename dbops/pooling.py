"""Behind PgBouncer in transaction mode: what a database entry needs, and what must not run there.

Each transaction may run on a different server connection, which other clients use between ours.
A session setting (``SET lock_timeout`` outside a transaction) would apply to whichever client's
statement lands there next, and ours might land elsewhere; a session advisory lock would be held
for someone else. The toolkit keeps no session state on hot paths (timeouts are transaction-local,
the backfill's lock is a lease in its row, ``migrate``'s own lock is held in an open transaction
there); what cannot avoid it, the statements of migrations that cannot run in a transaction
(``CREATE``/``DROP INDEX CONCURRENTLY``: their timeouts are session settings), refuses to run
through the pooler and names the direct connection to use.

``pgbouncer_profile(entry)`` makes one ``DATABASES`` entry fit the pooler and marks it (the
``PGBOUNCER`` key), which is how the toolkit knows; ``prepared_statements(entry, threshold)`` turns
on psycopg's server-side prepared statements for a direct connection. Both take the entry as the
project built it: reading the environment is the project's business.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, connections

from dbops.exceptions import DirectConnectionRequired

__all__ = [
    "DIRECT_HINT",
    "PGBOUNCER",
    "DirectConnectionRequired",
    "behind_pgbouncer",
    "pgbouncer_profile",
    "prepared_statements",
    "require_direct",
]

# The key of a DATABASES entry that pgbouncer_profile() sets: this alias goes through PgBouncer in
# transaction mode.
PGBOUNCER = "PGBOUNCER"

DIRECT_HINT = (
    "Run it over a direct connection to PostgreSQL, not through PgBouncer: a database entry whose "
    "HOST and PORT are the server's own, built without dbops.pooling.pgbouncer_profile() "
    "(for example, settings for `manage.py migrate` that bypass the pooler)."
)


def pgbouncer_profile(database: dict[str, Any]) -> dict[str, Any]:
    """Make one ``DATABASES`` entry fit PgBouncer in transaction mode, where each transaction may
    run on a different server connection, shared with other clients; return the entry.

    - no server-side cursors (a named cursor lives in one server session);
    - no named prepared statements: Django's default (``prepare_threshold`` unset) is kept, and a
      configured one is refused, since PgBouncer before 1.21 cannot follow them;
    - no session state: no ``options`` startup parameter (PgBouncer refuses it; set
      ``statement_timeout`` on the role instead: ``ALTER ROLE app SET statement_timeout = '30s'``),
      and the ``PGBOUNCER`` mark, so that work needing a session setting refuses to run there;
    - ``CONN_MAX_AGE`` as configured: a client connection to PgBouncer holds no server connection
      between transactions, so keeping it costs the server nothing and saves a connect per request.
    """
    options = database.setdefault("OPTIONS", {})
    if options.get("prepare_threshold") is not None or options.get("server_side_binding"):
        raise ImproperlyConfigured(
            "A database behind PgBouncer in transaction mode cannot use named prepared statements "
            "(OPTIONS prepare_threshold or server_side_binding): they break on PgBouncer before "
            "1.21. Remove them from this entry's OPTIONS."
        )
    options.pop("options", None)
    database["DISABLE_SERVER_SIDE_CURSORS"] = True
    database[PGBOUNCER] = True
    return database


def prepared_statements(database: dict[str, Any], threshold: int | None) -> dict[str, Any]:
    """``threshold`` None: Django's default, no prepared statements (safe behind any pooler). A
    number N: psycopg prepares a statement on the server once it has run N times on a connection
    (0: at once), which needs server-side binding (Django's default client-side cursor sends every
    statement as text and never prepares). Returns the entry."""
    if threshold is None:
        return database
    if threshold < 0:
        raise ImproperlyConfigured(f"prepare_threshold must be 0 or more, not {threshold}.")
    database.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=threshold)
    return database


def behind_pgbouncer(alias: str = DEFAULT_DB_ALIAS) -> bool:
    """Whether ``alias``'s entry went through ``pgbouncer_profile()``."""
    return bool(connections[alias].settings_dict.get(PGBOUNCER))


def require_direct(alias: str, what: str) -> None:
    if behind_pgbouncer(alias):
        raise DirectConnectionRequired(
            f"{what} needs a session setting, and database '{alias}' is reached through PgBouncer "
            f"in transaction mode (pgbouncer_profile), where the setting would stay on a server "
            f"connection other clients use. {DIRECT_HINT}"
        )
