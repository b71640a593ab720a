"""Behind PgBouncer in transaction mode (``DB_PGBOUNCER=true``): what must not run there.

Each transaction may run on a different server connection, which other clients use between ours.
A session setting (``SET lock_timeout`` outside a transaction) would apply to whichever client's
statement lands there next, and ours might land elsewhere; a session advisory lock would be held
for someone else. The project keeps no session state on hot paths (timeouts are transaction-local,
the backfill's lock is a lease in its row, ``migrate``'s own lock is held in an open transaction
there); what cannot avoid it, the statements of migrations that cannot run in a transaction
(``CREATE``/``DROP INDEX CONCURRENTLY``: their timeouts are session settings), refuses to run
through the pooler and names the direct connection to use.
"""

from __future__ import annotations

from django.db import connections

from dbops.exceptions import DirectConnectionRequired

__all__ = ["DIRECT_HINT", "DirectConnectionRequired", "behind_pgbouncer", "require_direct"]

DIRECT_HINT = (
    "Run it over a direct connection to PostgreSQL, not through PgBouncer: "
    "DATABASE_URL=postgres://user:password@db-host:5432/app DB_PGBOUNCER=false "
    "python manage.py migrate (README: Behind PgBouncer)."
)


def behind_pgbouncer(alias: str = "default") -> bool:
    return bool(connections[alias].settings_dict.get("PGBOUNCER"))


def require_direct(alias: str, what: str) -> None:
    if behind_pgbouncer(alias):
        raise DirectConnectionRequired(
            f"{what} needs a session setting, and database '{alias}' is reached through PgBouncer "
            f"in transaction mode (DB_PGBOUNCER=true), where the setting would stay on a server "
            f"connection other clients use. {DIRECT_HINT}"
        )
