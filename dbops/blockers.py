"""Who is in the way of a waiting session, from ``pg_blocking_pids()``, said so a person can act.

Asked from a connection of its own while the waiting statement waits (a session that waits cannot
ask anything), and answered with what an operator needs to decide: the process id, the
application, its state, how long its transaction has been open and the start of its query.
"""

from __future__ import annotations

from dataclasses import dataclass

QUERY_CHARS = 120

_BLOCKERS_SQL = """
    SELECT b.pid, a.application_name, a.state, a.usename, a.client_addr::text,
           extract(epoch FROM now() - a.xact_start)::float,
           left(regexp_replace(a.query, '\\s+', ' ', 'g'), %s), a.backend_type
      FROM unnest(pg_blocking_pids(%s)) AS b(pid)
      LEFT JOIN pg_stat_activity a ON a.pid = b.pid
     ORDER BY a.xact_start NULLS LAST
"""


@dataclass(frozen=True)
class Blocker:
    pid: int
    application: str | None
    state: str | None
    user: str | None
    client: str | None
    transaction_age_s: float | None
    query: str | None
    backend_type: str | None = None

    def describe(self) -> str:
        if self.pid == 0:
            return "a prepared transaction (pg_prepared_xacts; COMMIT PREPARED or ROLLBACK PREPARED it)"
        parts = [f'application "{self.application or ""}"']
        if self.user:
            parts.append(f"user {self.user}" + (f" from {self.client}" if self.client else ""))
        if self.backend_type and self.backend_type != "client backend":
            parts.append(self.backend_type)
        parts.append(self.state or "state unknown")
        if self.transaction_age_s is not None:
            parts.append(f"transaction open {self.transaction_age_s:,.1f} s")
        if self.query:
            parts.append(f'query "{self.query}"')
        return f"pid {self.pid} ({', '.join(parts)})"


def blocking_sessions(cursor, pid: int) -> list[Blocker]:
    """The sessions ``pid`` waits for now (empty when it waits for nothing)."""
    cursor.execute(_BLOCKERS_SQL, [QUERY_CHARS, pid])
    return [Blocker(*row) for row in cursor.fetchall()]


def blockers_sentence(blockers: list[Blocker]) -> str:
    if not blockers:
        return (
            "No blocking session was seen while it waited (it may have ended just then); "
            "`manage.py db_doctor` lists long transactions and blocked locks."
        )
    listed = "; ".join(b.describe() for b in blockers)
    pids = ", ".join(str(b.pid) for b in blockers if b.pid)
    end = (
        f" End it if it is stuck (SELECT pg_terminate_backend(pid) for {pids}), or wait for it to "
        "finish,"
        if pids
        else " Resolve it,"
    )
    return f"In the way: {listed}.{end} then run migrate again."
