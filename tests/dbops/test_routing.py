"""Reads on a real streaming replica, writes on the primary, read-your-writes, the lag ceiling and
a replica that fails: against a hot standby of the test server (tests/conftest.py ``replica``),
its lag made deterministic by pausing replay."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connections, transaction
from django.test import AsyncClient, Client
from zeal import zeal_context

from dbops import routing
from dbops.conf import dbops_settings
from dbops.doctor import examine
from tests.dbops_testapp.factories import parent_create, person_create
from tests.dbops_testapp.models import Parent
from tests.helpers import HEALTH_HEADERS, HEALTH_TOKEN

REPLICA_COUNT = "X-DB-Replica-Query-Count"
pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "replica"])


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(routing.monitor, "clock", fake)
    return fake


def logged_in(user) -> Client:
    """A client of its own, logged in (its own N+1 scope: one login, not a loop of them)."""
    client = Client()
    with zeal_context():
        client.force_login(user)
    return client


@pytest.fixture(autouse=True)
def _health_token(settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}


@pytest.fixture
def alice(replica):
    user = person_create("alice")
    parent = parent_create(owner=user, name="Old-name-x1")
    replica.catch_up()
    return user, parent


def test_a_user_who_wrote_nothing_reads_from_the_replica(alice):
    user, parent = alice
    response = logged_in(user).get("/parents/")
    assert response.status_code == 200
    assert b"Old-name-x1" in response.content
    # Every read but the session's went to the standby.
    assert int(response[REPLICA_COUNT]) >= 2
    assert int(response[REPLICA_COUNT]) < int(response["X-DB-Query-Count"])


def test_reads_inside_a_transaction_and_outside_a_request_go_to_the_primary(alice):
    router = routing.ReplicaRouter()
    assert router.db_for_read(Parent) == "default"  # no request: a command, a shell
    state, token = routing.request_begin(None)
    try:
        assert router.db_for_read(Parent) == "replica"
        with transaction.atomic():
            assert router.db_for_read(Parent) == "default"
        assert router.db_for_write(Parent) == "default"
        # After a write, the rest of the request reads from the primary.
        assert router.db_for_read(Parent) == "default"
    finally:
        routing.request_end(token)


def test_migrations_run_on_the_primary_only(replica):
    router = routing.ReplicaRouter()
    assert router.allow_migrate("default", "dbops_testapp") is True
    assert router.allow_migrate("replica", "dbops_testapp") is False


def test_a_writer_reads_its_write_while_the_replica_has_not_replayed_it(alice, replica):
    user, parent = alice
    writer, bystander = logged_in(user), logged_in(person_create("bob"))
    replica.pause()
    response = writer.post(
        f"/parents/{parent.pk}/edit/", {"name": "Renamed", "version": parent.version}
    )
    assert response.status_code == 302
    # The standby really is behind: it still has the old name.
    assert (
        replica.value("SELECT name FROM dbops_testapp_parent WHERE id = %s", [parent.pk])
        == "Old-name-x1"
    )
    page = writer.get("/parents/")
    assert b"Renamed" in page.content and b"Old-name-x1" not in page.content
    # The one query on the replica asked how far it has replayed; every read came from the primary.
    assert page[REPLICA_COUNT] == "1"
    # Someone who wrote nothing keeps reading from the replica meanwhile.
    assert int(bystander.get("/parents/")[REPLICA_COUNT]) > 0

    replica.resume()
    replica.catch_up()
    page = writer.get("/parents/")
    assert b"Renamed" in page.content
    assert int(page[REPLICA_COUNT]) > 0  # caught up: back on the replica
    assert dbops_settings.SESSION_LSN_KEY not in writer.session


def lagging(monitor: routing.ReplicaMonitor) -> routing.ReplicaHealth:
    """Look until the monitor finds the (paused) standby past the ceiling: an event that comes
    once the primary's clock has moved on past the last WAL the standby replayed."""
    deadline = time.monotonic() + 30
    while (health := monitor.refresh()).ok:
        assert time.monotonic() < deadline, f"never past the ceiling: {health}"
        time.sleep(0.01)
    return health


def primary_clock() -> float:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        return cursor.fetchone()[0]


def test_lag_past_the_ceiling_sends_every_read_to_the_primary(alice, replica, clock, settings):
    user, _ = alice
    client = logged_in(user)
    replica.pause()
    parent_create()  # WAL the standby will not replay while paused
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 60_000}
    health = routing.monitor.refresh()
    assert health.ok and health.lag_bytes > 0 and 0 < health.lag_ms < 60_000
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 200}
    health = lagging(routing.monitor)
    assert "lagging" in health.reason and "ceiling 200 ms" in health.reason
    assert health.lag_ms > 200
    assert client.get("/parents/")[REPLICA_COUNT] == "0"

    ready = client.get("/health/ready", headers=HEALTH_HEADERS)
    assert ready.status_code == 200
    body = ready.json()
    assert body["replica"] == "degraded" and "ceiling 200 ms" in body["replica_reason"]
    assert body["replica_lag_bytes"] > 0
    assert Client().get("/health/ready").json() == {"status": "ok", "replica": "degraded"}
    doctor = {f.check: f for f in examine()}["replica"]
    assert not doctor.ok and "lagging" in doctor.summary

    replica.resume()
    replica.catch_up()
    clock.now += 0.5
    health = routing.monitor.refresh()
    assert health.ok and health.lag_ms == 0
    assert int(client.get("/parents/")[REPLICA_COUNT]) > 0


def test_a_first_look_at_a_standby_behind_does_not_read_it_as_current(alice, replica, settings):
    """A fresh worker's monitor, and one idle since it last saw the standby caught up, both look at
    a standby whose replay has been paused longer than the ceiling: neither may call it current."""
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 60_000}
    idle = routing.ReplicaMonitor()
    assert idle.refresh().ok  # the standby was fit when this monitor last looked
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 300}
    replica.pause()
    parent_create()
    # The standby lacks WAL flushed at this moment; wait until that is older than the ceiling.
    written_at = primary_clock()
    while primary_clock() < written_at + 0.35:
        time.sleep(0.01)
    fresh = routing.ReplicaMonitor()
    for monitor in (fresh, idle):
        health = monitor.refresh()
        assert not health.ok and "lagging" in health.reason, health
        assert health.lag_ms > 300
    replica.resume()
    replica.catch_up()
    assert fresh.refresh().ok and idle.refresh().ok


def test_an_idle_primary_is_not_lag(alice, replica, clock):
    """pg_last_xact_replay_timestamp() would grow here; replay progress says the standby is current."""
    user, _ = alice
    routing.monitor.refresh()
    clock.now += 3600
    health = routing.monitor.refresh()
    assert health.ok and health.lag_ms == 0
    assert {f.check: f for f in examine()}["replica"].ok


def test_an_unreachable_replica_is_skipped_and_reported(alice, clock):
    user, _ = alice
    connections["replica"].close()
    connections["replica"].settings_dict.update(HOST="127.0.0.1", PORT="1")
    response = logged_in(user).get("/parents/")
    assert response.status_code == 200 and b"Old-name-x1" in response.content
    assert response[REPLICA_COUNT] == "0"
    body = Client().get("/health/ready", headers=HEALTH_HEADERS).json()
    assert body["status"] == "ok" and body["replica"] == "degraded"
    assert "unreachable" in body["replica_reason"] and "retried in" in body["replica_reason"]
    # Backed off: no further attempt until the back-off is over.
    assert not routing.monitor.usable()
    clock.now += routing.BACKOFF_MAX_S
    assert not routing.monitor.usable()  # tried again, still down: a longer back-off
    assert routing.monitor.failures == 2


def test_the_back_off_doubles_from_1_s_up_to_30_s_and_a_success_resets_it(alice, clock, settings):
    settings.DBOPS = {**settings.DBOPS, "REPLICA_MAX_LAG_MS": 60_000}  # lag is not the point here
    saved = dict(connections["replica"].settings_dict)
    connections["replica"].close()
    connections["replica"].settings_dict.update(HOST="127.0.0.1", PORT="1")
    backoffs = []
    for _ in range(8):
        assert not routing.monitor.usable()  # tried, refused, backed off
        backoffs.append(routing.monitor.down_until - clock.now)
        tries = routing.monitor.failures
        clock.now = routing.monitor.down_until - 0.001
        assert not routing.monitor.usable() and routing.monitor.failures == tries  # not tried
        clock.now = routing.monitor.down_until
    assert backoffs == [1, 2, 4, 8, 16, 30, 30, 30]

    connections["replica"].settings_dict.update(saved)  # the standby is back
    assert routing.monitor.usable() and routing.monitor.failures == 0
    connections["replica"].close()
    connections["replica"].settings_dict.update(HOST="127.0.0.1", PORT="1")
    clock.now += routing.HEALTH_INTERVAL_S
    assert not routing.monitor.usable()
    assert routing.monitor.down_until - clock.now == 1  # starts over at 1 s


def test_a_replica_killed_mid_request_is_served_from_the_primary(alice, replica):
    user, _ = alice
    client = logged_in(user)
    killed = []

    def kill_the_replica_backend(execute, sql, params, many, context):
        if (
            context["connection"].alias == "replica"
            and "dbops_testapp_parent" in sql
            and not killed
        ):
            killed.append(context["connection"].connection.info.backend_pid)
            with replica.connect() as other:
                other.execute("SELECT pg_terminate_backend(%s)", [killed[0]])
        return execute(sql, params, many, context)

    connections["replica"].ensure_connection()
    with connections["replica"].execute_wrapper(kill_the_replica_backend):
        response = client.get("/parents/")
    assert killed
    assert response.status_code == 200 and b"Old-name-x1" in response.content
    health = routing.monitor.health
    assert not health.ok and "failed mid-request" in health.reason


def test_async_views_read_from_the_replica(replica):
    parent = parent_create()
    replica.catch_up()
    client = Client()
    client.force_login(person_create())
    aclient = AsyncClient()
    aclient.cookies = client.cookies
    response = async_to_sync(aclient.get)(f"/parents/{parent.pk}/")
    assert response.status_code == 200
    assert parent.name.encode() in response.content
    assert int(response[REPLICA_COUNT]) >= 1
    assert Parent.objects.filter(pk=parent.pk).exists()
