"""Faults of a real hot standby under the full middleware stack: the standby stopped under a kept
connection, the WAL-position query killed, a replica killed mid-request under a view that must not
run twice. The standby is the suite's (tests/conftest.py ``replica``); its lag is made with
``pg_wal_replay_pause()``, never with sleeps."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.db import connections
from django.http import HttpResponse
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from zeal import zeal_context

from dbops import routing
from dbops.conf import dbops_settings
from dbops.rerun import idempotent, not_idempotent
from devdb import embedded
from tests.dbops_testapp.factories import parent_create, person_create
from tests.dbops_testapp.models import Child, Parent
from tests.helpers import killed_before, wsgi_request
from tests.replica import Replica

REPLICA_COUNT = "X-DB-Replica-Query-Count"
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


class FrozenClock:
    """The monitor's clock, stopped: its last look stays fresh, as it is for half a second after
    every look in a busy worker; a failure must then be met by the request itself."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def frozen(monkeypatch):
    clock = FrozenClock()
    monkeypatch.setattr(routing.monitor, "clock", clock)
    return clock


def logged_in(user) -> Client:
    client = Client()
    with zeal_context():
        client.force_login(user)
    return client


@pytest.fixture
def alice(replica):
    user = person_create("alice")
    parent = parent_create(owner=user, name="Old-name-x1")
    replica.catch_up()
    return user, parent


@pytest.fixture
def stoppable(replica, replica_server):
    """The standby, for the test to stop; started again afterwards (rebuilt: a few seconds)."""
    yield replica
    if embedded.status(replica_server.pgdata) is None:
        primary = embedded.status(settings.EMBEDDED_PGDATA)
        restarted = embedded.replica_start(primary)
        assert (restarted.port, restarted.socket_dir) == (
            replica_server.port,
            replica_server.socket_dir,
        )
        connections["replica"].close()
        Replica(restarted).catch_up()
    routing.monitor.reset()


def test_a_standby_stopped_under_a_kept_connection_costs_no_error_page(
    alice, stoppable, replica_server, frozen
):
    """A worker keeps its connection to the standby between requests (CONN_MAX_AGE, health
    checks on); the standby stops; the next request's reconnect fails inside Django's health
    check. Through the real WSGI handler, which runs those checks at the request's start."""
    user, _ = alice
    cookie = {"Cookie": f"sessionid={logged_in(user).cookies['sessionid'].value}"}
    replica_settings = connections["replica"].settings_dict
    assert replica_settings["CONN_MAX_AGE"] > 0 and replica_settings["CONN_HEALTH_CHECKS"]
    status, headers, body = wsgi_request("/parents/", headers=cookie)
    assert status == 200 and int(headers[REPLICA_COUNT]) > 0
    assert connections["replica"].connection is not None  # kept for the next request

    assert embedded.stop(replica_server.pgdata)  # pg_ctl stop -m fast, waits until it is down

    status, headers, body = wsgi_request("/parents/", headers=cookie)
    assert status == 200, body[:300]
    assert b"Old-name-x1" in body and headers[REPLICA_COUNT] == "0"
    health = routing.monitor.health
    assert not health.ok and "unreachable" in health.reason and "retried in 1 s" in health.reason
    # Backed off: the next request does not even try the standby.
    status, headers, _ = wsgi_request("/parents/", headers=cookie)
    assert status == 200 and headers[REPLICA_COUNT] == "0"


def test_a_write_whose_wal_position_cannot_be_read_keeps_its_writer_on_the_primary(
    alice, replica, monkeypatch
):
    user, parent = alice
    writer = logged_in(user)
    replica.pause()
    responses = []
    failure = killed_before(
        "pg_current_wal_insert_lsn",
        lambda: responses.append(
            writer.post(
                f"/parents/{parent.pk}/edit/", {"name": "Renamed", "version": parent.version}
            )
        ),
    )
    assert failure is None and responses[0].status_code == 302
    assert Parent.objects.get(pk=parent.pk).name == "Renamed"
    stale = replica.value("SELECT name FROM dbops_testapp_parent WHERE id = %s", [parent.pk])
    assert stale == "Old-name-x1"  # the standby really lacks the write
    assert dbops_settings.SESSION_LSN_KEY not in writer.session  # the position is unknown

    page = writer.get("/parents/")
    assert b"Renamed" in page.content and page[REPLICA_COUNT] == "0"

    # Even caught up, the replica waits for the mark to expire: the ceiling (plus one look).
    replica.resume()
    replica.catch_up()
    assert writer.get("/parents/")[REPLICA_COUNT] == "0"
    until = writer.session[dbops_settings.SESSION_PRIMARY_UNTIL_KEY]
    monkeypatch.setattr(routing, "wall_clock", lambda: until + 0.001)
    page = writer.get("/parents/")
    assert b"Renamed" in page.content and int(page[REPLICA_COUNT]) > 0
    assert dbops_settings.SESSION_PRIMARY_UNTIL_KEY not in writer.session


def test_a_get_that_failed_on_the_replica_runs_again_with_a_warning_and_no_traceback(
    alice, replica, caplog
):
    user, _ = alice
    client = logged_in(user)
    with caplog.at_level(logging.WARNING), replica.killed_at("dbops_testapp_parent") as killed:
        response = client.get("/parents/")
    assert killed and response.status_code == 200 and b"Old-name-x1" in response.content
    warnings = [r for r in caplog.records if r.name == "dbops"]
    assert [r.levelname for r in warnings] == ["WARNING", "WARNING"]
    assert "failed mid-request" in warnings[0].getMessage()
    assert warnings[1].getMessage().endswith("running it again")
    assert not any(r.exc_info for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_post_that_failed_on_the_replica_is_a_503_that_says_nothing_was_saved(replica, caplog):
    """A POST is never run twice on its own (a view may call a payment gateway): the take reads
    its parent on the replica first, and that read fails."""
    user = person_create("carol")
    parent = parent_create(owner=user, stock=5)
    replica.catch_up()
    client = logged_in(user)
    form = {"quantity": "1", "key": "replica-fault-1"}
    with caplog.at_level(logging.WARNING), replica.killed_at("dbops_testapp_parent") as killed:
        response = client.post(f"/parents/{parent.pk}/take/", form)
    assert killed
    assert response.status_code == 503 and response["Retry-After"] == "5"
    assert b"nothing was saved" in response.content
    assert Child.objects.count() == 0 and Parent.objects.get(pk=parent.pk).stock == 5
    assert any("not run again (not safe to repeat)" in r.getMessage() for r in caplog.records)


# Views that do something outside the database before they read: what a second run would repeat.
effects: list[str] = []


def _effect_then_read(request, name: str) -> HttpResponse:
    effects.append(name)
    return HttpResponse(f"{Parent.objects.count()} parents")


@not_idempotent
def calls_out(request):
    return _effect_then_read(request, "calls-out")


@csrf_exempt
@idempotent
def keyed(request):
    return _effect_then_read(request, "keyed")


@csrf_exempt
def plain(request):
    return _effect_then_read(request, "plain")


urlpatterns = [path("calls-out/", calls_out), path("keyed/", keyed), path("plain/", plain)]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    "method, url, runs, status",
    [
        ("get", "/plain/", 2, 200),  # a safe method runs again
        ("post", "/plain/", 1, 503),  # an unsafe one does not
        ("get", "/calls-out/", 1, 503),  # marked @not_idempotent: not even a GET
        ("post", "/keyed/", 2, 200),  # marked @idempotent: even a POST
    ],
)
def test_only_what_is_safe_to_repeat_runs_again(replica, method, url, runs, status):
    effects.clear()
    parent_create()
    replica.catch_up()
    with replica.killed_at("dbops_testapp_parent") as killed:
        response = getattr(Client(), method)(url)
    assert killed
    assert response.status_code == status
    assert len(effects) == runs
    if status == 200:
        assert response.content == b"1 parents"
    else:
        assert b"nothing was saved" in response.content


def test_an_async_page_that_failed_on_the_replica_runs_again_on_the_primary(replica):
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    parent = parent_create()
    replica.catch_up()
    client = AsyncClient()
    client.cookies = logged_in(person_create()).cookies
    with replica.killed_at("dbops_testapp_parent") as killed:
        response = async_to_sync(client.get)(f"/parents/{parent.pk}/")
    assert killed and response.status_code == 200
    assert parent.name.encode() in response.content
