"""Driving the test standby: pause and resume its replay (deterministic lag, no sleeps), wait for
it to catch up, kill its backends."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from django.db import connections

from devdb.embedded import ServerStatus


class Replica:
    def __init__(self, server: ServerStatus):
        self.server = server

    def connect(self) -> psycopg.Connection:
        name = connections["default"].settings_dict["NAME"]
        return psycopg.connect(self.server.socket_url(name), autocommit=True)

    def _until(self, sql: str, params=(), timeout: float = 30) -> None:
        """Poll the standby until ``sql`` answers true (an event we wait for, not a pause)."""
        deadline = time.monotonic() + timeout
        with self.connect() as conn:
            while not conn.execute(sql, params).fetchone()[0]:
                assert time.monotonic() < deadline, f"the standby never answered true to {sql}"
                time.sleep(0.005)

    def pause(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        self._until("SELECT pg_get_wal_replay_pause_state() = 'paused'")

    def resume(self) -> None:
        with self.connect() as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        self._until("SELECT pg_get_wal_replay_pause_state() = 'not paused'")

    def catch_up(self) -> None:
        """Wait until the standby has replayed everything the primary has flushed now."""
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT pg_current_wal_flush_lsn()::text")
            lsn = cursor.fetchone()[0]
        self._until("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn])

    def value(self, sql: str, params=()):
        with self.connect() as conn:
            return conn.execute(sql, params).fetchone()[0]

    @contextmanager
    def killed_at(self, sql_fragment: str) -> Iterator[list[int]]:
        """Inside the block, the replica connection's backend is terminated (from another
        connection, as a crash or a recovery conflict would) just before the first statement
        containing ``sql_fragment``; yields the pids killed."""
        killed: list[int] = []

        def kill(execute, sql, params, many, context):
            if context["connection"].alias == "replica" and sql_fragment in sql and not killed:
                killed.append(context["connection"].connection.info.backend_pid)
                with self.connect() as other:
                    other.execute("SELECT pg_terminate_backend(%s)", [killed[0]])
            return execute(sql, params, many, context)

        connections["replica"].ensure_connection()
        with connections["replica"].execute_wrapper(kill):
            yield killed
