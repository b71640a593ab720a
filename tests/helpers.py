"""Helpers for tests that need real processes: a gunicorn server, a raw connection, a WSGI call."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote
from wsgiref.util import setup_testing_defaults

import psycopg
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.db import connection
from zeal import zeal_context

ROOT = Path(__file__).resolve().parent.parent


def database_url(settings_dict: dict | None = None) -> str:
    """A URL for the database Django is connected to (the test database during tests)."""
    s = settings_dict or connection.settings_dict
    auth = quote(s["USER"] or "postgres") + (
        ":" + quote(s["PASSWORD"], safe="") if s["PASSWORD"] else ""
    )
    host = quote(str(s["HOST"] or "localhost"), safe="")
    port = f":{s['PORT']}" if s["PORT"] else ""
    return f"postgres://{auth}@{host}{port}/{s['NAME']}"


def raw_connection(*, autocommit: bool = True, **kwargs) -> psycopg.Connection:
    """A psycopg connection of its own, outside Django: another client of the same database."""
    if connection.settings_dict.get("PGBOUNCER"):
        # Through PgBouncer in transaction mode: no named prepared statements (psycopg prepares a
        # query run five times, and the next run may land on another server connection).
        kwargs.setdefault("prepare_threshold", None)
    return psycopg.connect(database_url(), autocommit=autocommit, **kwargs)


@contextmanager
def default_through_pgbouncer(**running_options):
    """The default connection through a real PgBouncer in transaction mode in front of the test
    server (``devdb.pgbouncer.running(**running_options)``), with the DB_PGBOUNCER=true profile;
    yields the PgBouncer, and puts the connection back afterwards."""
    from dbops.pooling import pgbouncer_profile
    from devdb import pgbouncer

    saved = dict(connection.settings_dict)
    with pgbouncer.running(
        str(saved["HOST"]), int(saved["PORT"] or 5432), **running_options
    ) as bouncer:
        connection.close()
        connection.settings_dict["OPTIONS"] = dict(saved["OPTIONS"])
        connection.settings_dict.update(HOST=bouncer.host, PORT=str(bouncer.port))
        pgbouncer_profile(connection.settings_dict)
        try:
            yield bouncer
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(
    url: str, *, timeout: float = 15, headers: dict | None = None
) -> tuple[int, dict, bytes]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


# The token that shows /health/ready's details (set in subprocess_env for servers the tests start).
HEALTH_TOKEN = "health-token-for-tests"
HEALTH_HEADERS = {"X-Health-Token": HEALTH_TOKEN}


def http_json(url: str, *, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = http_get(url, headers=headers)
    return status, json.loads(body)


def subprocess_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PYTEST_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(),
            "HEALTH_TOKEN": HEALTH_TOKEN,
        }
    )
    if connection.settings_dict.get("PGBOUNCER"):
        env["DB_PGBOUNCER"] = "true"  # the suite runs through PgBouncer (--pgbouncer)
    env.update(overrides)
    return env


@contextmanager
def gunicorn(**env_overrides: str) -> Iterator[str]:
    """Serve the project with gunicorn (WSGI) on a free port; yields the base URL."""
    port = free_port()
    command = ["gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    with _server(command, port, env_overrides) as base:
        yield base


@contextmanager
def uvicorn(**env_overrides: str) -> Iterator[str]:
    """Serve the project with uvicorn (ASGI) on a free port; yields the base URL."""
    port = free_port()
    command = ["uvicorn", "config.asgi:application", "--port", str(port), "--lifespan", "off"]
    with _server(command, port, env_overrides) as base:
        yield base


@contextmanager
def runserver(settings: str = "config.settings.local", **env_overrides: str) -> Iterator[str]:
    """``manage.py runserver`` on a free port against the test database; yields the base URL."""
    port = free_port()
    command = ["django", "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"]
    overrides = {"DJANGO_SETTINGS_MODULE": settings, "EMBEDDED_PG_AUTOSTART": "false"}
    with _server(command, port, overrides | env_overrides) as base:
        yield base


@contextmanager
def _server(command: list[str], port: int, env_overrides: dict[str, str]) -> Iterator[str]:
    # The server's stderr goes to a file, not a pipe: nobody reads a pipe while the test runs, and
    # a server blocks on a full one (64 KiB: six logged tracebacks of a database outage), so its
    # next request never answered and the test failed on a socket read timeout.
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=subprocess_env(**env_overrides),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                stderr.seek(0)
                said = stderr.read().decode(errors="replace")[-3000:]
                raise RuntimeError(f"{command[0]} exited: {said}")
            try:
                if http_get(base + "/health/live", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start in 30 s")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        process.wait(10)
        stderr.close()


class DatabaseProxy:
    """A TCP port on 127.0.0.1 that forwards to the database the tests use, until ``cut()``:
    then every forwarded connection is closed and new ones are refused, as when the server stops
    (``make stopdb``), for a server process the test started (``url`` is its DATABASE_URL)."""

    def __init__(self, settings_dict: dict):
        host, port = str(settings_dict["HOST"] or "127.0.0.1"), int(settings_dict["PORT"] or 5432)
        if host.startswith("/"):  # the embedded server's socket directory
            self.family, self.address = socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
        else:
            self.family, self.address = socket.AF_INET, (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = database_url({**settings_dict, "HOST": "127.0.0.1", "PORT": self.port})
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.is_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(self.family, socket.SOCK_STREAM)
            upstream.connect(self.address)
            with self.lock:
                self.sockets += [client, upstream]
                if self.is_cut:  # cut while this one was connecting
                    self._close(client, upstream)
                    return
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        # shutdown() first: close() alone leaves a thread blocked in accept() listening.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            self.is_cut = True
            self._close(*self.sockets)

    @staticmethod
    def _close(*ends: socket.socket) -> None:
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@contextmanager
def database_proxy() -> Iterator[DatabaseProxy]:
    """A ``DatabaseProxy`` to the test database, cut when the block ends."""
    proxy = DatabaseProxy(connection.settings_dict)
    try:
        yield proxy
    finally:
        proxy.cut()


def wsgi_request(
    path: str, method: str = "GET", *, headers: dict | None = None, script_name: str = ""
) -> tuple[int, dict, bytes]:
    """One request through Django's real WSGI handler, with the request_started/finished signals.

    Unlike the test client, this runs ``close_old_connections`` at the request boundaries, so
    CONN_MAX_AGE and CONN_HEALTH_CHECKS behave as they do under gunicorn.
    """
    environ = {
        "PATH_INFO": path,
        "SCRIPT_NAME": script_name,  # the prefix a proxy mounts the site at, if any
        "REQUEST_METHOD": method,
        "wsgi.input": io.BytesIO(),
        "SERVER_NAME": "testserver",
        **{"HTTP_" + k.upper().replace("-", "_"): v for k, v in (headers or {}).items()},
    }
    setup_testing_defaults(environ)
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split()[0])
        captured["headers"] = dict(headers)

    response = WSGIHandler()(environ, start_response)
    try:
        body = b"".join(response)
    finally:
        response.close()  # sends request_finished
    return captured["status"], captured["headers"], body


def in_threads(count: int, target) -> list:
    """Run target(i) for i in range(count) in real threads at once, each with its own connection
    (closed when it finishes) and its own N+1 detection (a new thread does not inherit the test's
    context); return the results in order."""
    from concurrent.futures import ThreadPoolExecutor

    def run(i):
        try:
            with zeal_context():
                return target(i)
        finally:
            connection.close()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def server_pid() -> int:
    """The PostgreSQL backend serving the default connection now. Not ``info.backend_pid``:
    through PgBouncer that is the pooler's own number; asked inside a transaction, this is the
    server connection the transaction holds."""
    connection.ensure_connection()
    return connection.connection.execute("SELECT pg_backend_pid()").fetchone()[0]


def killed_before(sql_fragment: str, call) -> BaseException | None:
    """Run ``call()``; just before its first statement containing ``sql_fragment``, terminate its
    PostgreSQL backend from another connection, as a crash or a failover would. Returns what
    ``call()`` raised (None if it finished); the broken connection is discarded afterwards."""
    fired = []

    def kill_first_match(execute, sql, params, many, context):
        if sql_fragment in sql and not fired:
            fired.append(True)
            with raw_connection() as other:
                other.execute("SELECT pg_terminate_backend(%s)", [server_pid()])
        return execute(sql, params, many, context)

    try:
        with connection.execute_wrapper(kill_first_match):
            call()
    except Exception as exc:  # noqa: BLE001 (handed to the test to assert on)
        return exc
    finally:
        connection.close()
        assert fired, f"no statement containing {sql_fragment!r} ran"
    return None


def run_command(*args, **options) -> None:
    """``call_command`` as one unit of work with its own N+1 scope, as a run in its own process
    would be: a test that runs a command twice is not a loop inside the command."""
    with zeal_context():
        call_command(*args, **options)


def backends_wait_for_locks(
    pids: list[int] | None, *, count: int | None = None, deadline_s: float = 10
) -> bool:
    """True once every backend in ``pids`` is waiting for a lock (asked of PostgreSQL itself),
    False if that has not happened within ``deadline_s``. With ``pids`` None (through PgBouncer a
    client cannot know its server backend before its transaction starts): once ``count`` backends
    of this test database wait for a lock."""
    deadline = time.monotonic() + deadline_s
    if pids is None:
        sql, params, expected = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'",
            [],
            count,
        )
    else:
        sql, params, expected = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
            [pids],
            len(pids),
        )
    with raw_connection() as observer:
        while time.monotonic() < deadline:
            if observer.execute(sql, params).fetchone()[0] == expected:
                return True
            time.sleep(0.005)
    return False


def queued_behind_a_lock(lock_sql: str, params: list, calls: list, *, commit: bool = False) -> list:
    """Run each of ``calls`` in a thread of its own while another connection holds the lock that
    ``lock_sql`` takes; let go only once every call is waiting for a lock, so all of them have
    done whatever they do before their first wait. Returns what each call returned or raised,
    in order. Raises AssertionError when the calls never all waited (then nothing was tested).

    Let go by rolling back, or with ``commit`` by committing what ``lock_sql`` did: a change (an
    UPDATE) that commits while the calls wait for its row, after they read it."""
    import threading

    holder = raw_connection(autocommit=False)
    holder.execute(lock_sql, params)
    pids: list[int] = []
    connected = threading.Barrier(len(calls) + 1)
    queued: list[bool] = []

    def release() -> None:
        try:
            connected.wait(10)
            pooled = connection.settings_dict.get("PGBOUNCER")
            queued.append(backends_wait_for_locks(None if pooled else pids, count=len(calls)))
        finally:
            if commit and queued == [True]:
                holder.commit()
            else:
                holder.rollback()

    def run(i):
        connection.ensure_connection()
        pids.append(connection.connection.info.backend_pid)
        connected.wait(10)
        try:
            return calls[i]()
        except Exception as exc:  # noqa: BLE001 (handed to the test to assert on)
            return exc

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        results = in_threads(len(calls), run)
    finally:
        releaser.join(15)
        holder.close()
    assert queued == [True], "the calls never all waited behind the held lock"
    return results


@contextmanager
def timeouts_seen() -> Iterator[list[tuple[str, str, str]]]:
    """(statement, lock_timeout, statement_timeout) the server had in effect for each statement
    this thread's default connection ran in the block, read from the server just before it ran
    (below every execute wrapper, so after the migration guard set them)."""
    import threading
    from unittest import mock

    from django.db import connections
    from django.db.backends.utils import CursorWrapper

    seen: list[tuple[str, str, str]] = []
    original = CursorWrapper._execute
    thread = threading.get_ident()

    def probe(self, sql, params, *rest):
        raw = self.db.connection
        if threading.get_ident() == thread and self.db is connections["default"]:
            if raw.info.transaction_status != psycopg.pq.TransactionStatus.INERROR:
                with raw.cursor() as cursor:
                    cursor.execute(
                        "SELECT current_setting('lock_timeout'),"
                        " current_setting('statement_timeout')"
                    )
                    seen.append((" ".join(str(sql).split()), *cursor.fetchone()))
        return original(self, sql, params, *rest)

    with mock.patch.object(CursorWrapper, "_execute", probe):
        yield seen


class RowLock:
    """A row locked by another client's open transaction (``row_locked``)."""

    def __init__(self, holder: psycopg.Connection):
        self.holder = holder
        self.retries: list[str] = []  # the SQLSTATE of each retry the lock caused meanwhile
        self.released = threading.Event()

    def release(self) -> None:
        """End the holder's transaction (a rollback): the row is free."""
        if not self.released.is_set():
            self.released.set()
            self.holder.rollback()


@contextmanager
def row_locked(model, pk, *, release_on_retry: bool = False) -> Iterator[RowLock]:
    """Another connection holds ``model``'s row ``pk`` ``FOR UPDATE`` in an open transaction for
    the block (or until ``release()``): what a slow transaction elsewhere does to a service.
    ``release_on_retry``: let go as soon as the retry loop (``dbops.retry``) reports a lock
    timeout (55P03), so the attempt after it finds the row free."""
    import logging

    from psycopg import sql

    table, column = model._meta.db_table, model._meta.pk.column
    holder = raw_connection(autocommit=False)
    lock = RowLock(holder)
    found = holder.execute(
        sql.SQL("SELECT 1 FROM {} WHERE {} = %s FOR UPDATE").format(
            sql.Identifier(table), sql.Identifier(column)
        ),
        [pk],
    ).fetchone()
    assert found, f"no {model.__name__} row {pk!r} to lock"

    class Seen(logging.Handler):
        def emit(self, record):
            state = getattr(record, "sqlstate", None)
            if state:
                lock.retries.append(state)
                if release_on_retry and state == "55P03":
                    lock.release()

    retry_log = logging.getLogger("dbops.retry")
    handler, level = Seen(), retry_log.level
    retry_log.addHandler(handler)
    retry_log.setLevel(logging.INFO)  # the retry loop reports each retry at INFO
    try:
        yield lock
    finally:
        retry_log.removeHandler(handler)
        retry_log.setLevel(level)
        lock.release()
        holder.close()


@contextlib.contextmanager
def statements_run(alias: str = "default"):
    """Every SQL statement Django sends on ``alias`` inside the block, in order, whitespace
    collapsed (a list that fills as the block runs)."""
    from django.db import connections

    sql: list[str] = []

    def record(execute, statement, params, many, context):
        sql.append(" ".join(statement.split()))
        return execute(statement, params, many, context)

    with connections[alias].execute_wrapper(record):
        yield sql
