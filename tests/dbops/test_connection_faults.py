"""Connections that break under a request, on real servers: a dead server connection handed over
by a real PgBouncer (Debian's pgbouncer, with PgBouncer's own server_check_delay), and a backend
killed while the session is saved after a write has committed."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.test import Client
from django.urls import include, path
from zeal import zeal_context

from dbops.rerun import idempotent
from tests.conftest import pgbouncer_required
from tests.dbops_testapp.factories import parent_create, person_create
from tests.dbops_testapp.models import Child, Parent
from tests.dbops_testapp.views import parent_take
from tests.helpers import database_url, default_through_pgbouncer, raw_connection, server_pid

pytestmark = pytest.mark.django_db(transaction=True)


def logged_in(user) -> Client:
    client = Client()
    with zeal_context():
        client.force_login(user)
    return client


@pytest.fixture
def pooled():
    """The default connection through a PgBouncer with ONE server connection, checked before
    reuse only after 30 s idle, as PgBouncer does by default; the direct URL beside it."""
    pgbouncer_required()
    direct = database_url()
    with default_through_pgbouncer(pool_size=1, server_check_delay=30) as bouncer:
        yield bouncer, direct


def _server_linked(bouncer) -> bool:
    """Does PgBouncer show its server connection linked to a client (the client's statement sent
    on to the server)?"""
    admin = bouncer.url("pgbouncer")
    with psycopg.connect(admin, autocommit=True, prepare_threshold=None) as console:
        cursor = console.execute("SHOW SERVERS")
        state = [column.name for column in cursor.description].index("state")
        return any(row[state] == "active" for row in cursor.fetchall())


def _kill_once_forwarded(bouncer, direct: str, pid: int) -> None:
    try:
        deadline = time.monotonic() + 10
        while not _server_linked(bouncer):
            assert time.monotonic() < deadline, "PgBouncer never handed the connection over"
            time.sleep(0.005)
        with psycopg.connect(direct, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        os.kill(pid, signal.SIGCONT)


def local_backend(pid: int) -> None:
    """The test stops and resumes a backend with signals: only a process of this machine that is
    that backend (its title names the database), never a pid of a server elsewhere."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        title = ""
    if not (title.startswith("postgres: ") and connection.settings_dict["NAME"] in title):
        pytest.skip(f"backend {pid} is not a process of this machine: the server is elsewhere")


def dead_when_handed_over(pooled, *, in_transaction: bool):
    """An execute wrapper: before the first statement (inside a transaction, or any), the pooled
    server connection's backend is stopped (SIGSTOP); once PgBouncer has handed it over to this
    client, with the statement (or the transaction's BEGIN) sent on, it is terminated and let go.
    It dies answering: the race a kill under load hits between PgBouncer's checks."""
    pid = server_pid()
    local_backend(pid)
    fired = []

    def wrapper(execute, sql, params, many, context):
        if fired or (in_transaction and not context["connection"].in_atomic_block):
            return execute(sql, params, many, context)
        fired.append(pid)
        os.kill(pid, signal.SIGSTOP)
        killer = threading.Thread(target=_kill_once_forwarded, args=(*pooled, pid))
        killer.start()
        try:
            return execute(sql, params, many, context)
        finally:
            killer.join(15)

    wrapper.fired = fired
    return wrapper


@pytest.fixture
def alice():
    user = person_create("alice")
    return user, parent_create(owner=user, name="Spending", stock=100)


TAKE = {"quantity": "10", "key": "fault-key-1"}


@idempotent
@functools.wraps(parent_take)
def keyed_take(request, pk: int):
    """The take page as a project would mark it once its only effect is the keyed write: safe to
    run twice (the test app's view is left unmarked). Each run is its own unit of work for the
    N+1 detector: the second run's lookups are not a loop."""
    with zeal_context():
        return parent_take(request, pk)


urlpatterns = [
    path("keyed-take/<int:pk>/", keyed_take),
    path("", include("tests.dbops_testapp.urls")),
]


def stock(parent) -> int:
    return Parent.objects.get(pk=parent.pk).stock


def test_a_dead_server_connection_at_begin_is_a_503_that_says_nothing_was_saved(pooled, alice):
    """psycopg's "received 2 results from command 'BEGIN'" (an InternalError, no SQLSTATE) was a
    500; it is a lost connection. A POST is not run again on its own: 503, nothing written."""
    user, parent = alice
    client = logged_in(user)
    dies = dead_when_handed_over(pooled, in_transaction=True)
    with connection.execute_wrapper(dies):
        response = client.post(f"/parents/{parent.pk}/take/", TAKE)
    assert dies.fired
    assert response.status_code == 503 and b"nothing was saved" in response.content
    assert Child.objects.count() == 0 and stock(parent) == 100


@pytest.mark.urls(__name__)
def test_a_dead_server_connection_at_begin_runs_an_idempotent_view_again_on_a_fresh_one(
    pooled, alice
):
    user, parent = alice
    client = logged_in(user)
    dies = dead_when_handed_over(pooled, in_transaction=True)
    with connection.execute_wrapper(dies):
        response = client.post(f"/keyed-take/{parent.pk}/", TAKE)
    assert dies.fired
    assert response.status_code == 302, response.content[:300]
    assert Child.objects.count() == 1 and stock(parent) == 90


def test_a_page_whose_server_connection_died_is_served_on_a_fresh_one(pooled, alice):
    user, _ = alice
    client = logged_in(user)
    dies = dead_when_handed_over(pooled, in_transaction=False)
    with connection.execute_wrapper(dies):
        response = client.get("/parents/")
    assert dies.fired
    assert response.status_code == 200 and b"Spending" in response.content


def killed_at_session_save(times: int):
    """An execute wrapper: terminates the connection's backend just before each of the first
    ``times`` saves of a session (from another connection, as a crash or a failover would)."""
    kills = []

    def wrapper(execute, sql, params, many, context):
        if 'UPDATE "django_session"' in sql and len(kills) < times:
            kills.append(server_pid())
            with raw_connection() as other:
                other.execute("SELECT pg_terminate_backend(%s)", [kills[-1]])
        return execute(sql, params, many, context)

    wrapper.kills = kills
    return wrapper


@pytest.fixture
def writer(alice, replica):
    """With the replica configured, a write puts its WAL position in the session: the session is
    saved after the view has answered."""
    user, parent = alice
    replica.catch_up()
    return logged_in(user), parent


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_a_session_save_killed_after_a_write_is_saved_again_and_the_redirect_kept(writer):
    client, parent = writer
    killed = killed_at_session_save(times=1)
    with connection.execute_wrapper(killed):
        response = client.post(f"/parents/{parent.pk}/take/", TAKE)
    assert len(killed.kills) == 1
    assert response.status_code == 302 and response["Location"] == "/parents/"
    assert Child.objects.count() == 1 and stock(parent) == 90
    assert "_dbops_wal_lsn" in client.session  # the session's save went through


@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_a_session_save_that_keeps_failing_after_a_write_never_says_nothing_was_done(writer):
    client, parent = writer
    killed = killed_at_session_save(times=2)
    with connection.execute_wrapper(killed):
        response = client.post(f"/parents/{parent.pk}/take/", TAKE)
    assert len(killed.kills) == 2
    assert Child.objects.count() == 1  # committed before the session's save
    assert response.status_code == 503
    page = response.content.decode()
    assert "may have been carried out" in page and "nothing" not in page.lower()
    assert '<a href="/parents/">Check here</a>' in page
