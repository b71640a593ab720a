"""db_doctor and /health/ready, each condition created for real."""

import json
import threading
import time
from io import StringIO

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection
from django.db.migrations.recorder import MigrationRecorder

from tests.dbops_testapp.factories import parent_create
from tests.helpers import (
    HEALTH_HEADERS,
    HEALTH_TOKEN,
    backends_wait_for_locks,
    database_url,
    raw_connection,
)

pytestmark = pytest.mark.django_db(transaction=True)


def doctor(*args) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("db_doctor", *args, stdout=out)
        return 0, out.getvalue()
    except CommandError as exc:
        return exc.returncode, out.getvalue() + str(exc)


def findings(*args) -> dict:
    code, output = doctor("--json", *args)
    return code, {f["check"]: f for f in json.loads(output[: output.rindex("]") + 1])}


def test_a_healthy_database_exits_zero():
    code, output = doctor()
    assert code == 0
    assert "ok   migrations: all applied" in output


def test_invalid_index_is_reported_here_and_in_health(client, settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}
    parent_create(region="south")
    parent_create(region="south")
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        cursor.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY doctor_bad_idx ON dbops_testapp_parent (region)"
        )
    try:
        code, found = findings()
        assert code == 1
        assert not found["invalid indexes"]["ok"]
        assert found["invalid indexes"]["details"] == [
            {"index": "doctor_bad_idx", "table": "dbops_testapp_parent"}
        ]
        assert client.get("/health/ready", headers=HEALTH_HEADERS).json()["invalid_indexes"] == [
            {"index": "doctor_bad_idx", "table": "dbops_testapp_parent"}
        ]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX CONCURRENTLY doctor_bad_idx")


def test_not_valid_constraint_is_reported_here_and_in_health(client, settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE dbops_testapp_parent ADD CONSTRAINT doctor_check CHECK (stock < 1000000000) NOT VALID"
        )
    try:
        code, found = findings()
        assert code == 1
        assert found["NOT VALID constraints"]["details"] == [
            {"constraint": "doctor_check", "table": "dbops_testapp_parent"}
        ]
        assert client.get("/health/ready", headers=HEALTH_HEADERS).json()[
            "not_valid_constraints"
        ] == [{"constraint": "doctor_check", "table": "dbops_testapp_parent"}]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE dbops_testapp_parent DROP CONSTRAINT doctor_check")


def test_long_and_idle_in_transaction_sessions_are_reported():
    other = raw_connection(autocommit=False)
    other.execute("SELECT 1")  # opens a transaction, then sits idle in it
    pid = other.info.backend_pid
    try:
        code, found = findings("--long-transaction-seconds", "0", "--idle-seconds", "0")
        assert code == 1
        assert pid in [s["pid"] for s in found["long transactions"]["details"]]
        assert pid in [s["pid"] for s in found["idle in transaction"]["details"]]
    finally:
        other.close()
    code, found = findings("--long-transaction-seconds", "0", "--idle-seconds", "0")
    assert pid not in [s["pid"] for s in found["idle in transaction"]["details"]]


def test_blocked_and_blocking_sessions_are_reported():
    blocker = raw_connection(autocommit=False)
    blocker.execute("LOCK TABLE dbops_testapp_parent IN ACCESS EXCLUSIVE MODE")
    waiter = raw_connection()
    thread = threading.Thread(
        target=lambda: waiter.execute("SELECT count(*) FROM dbops_testapp_parent")
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            code, found = findings()
            blocked = found["blocked locks"]["details"]
            if blocked or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert code == 1
        assert blocked[0]["pid"] == waiter.info.backend_pid
        assert blocked[0]["blocked_by_pid"] == blocker.info.backend_pid
    finally:
        blocker.rollback()
        thread.join(10)
        blocker.close()
        waiter.close()


def test_pool_sizing_is_reported(settings):
    settings.DBOPS = {**settings.DBOPS, "WEB_CONCURRENCY": 100_000}
    code, output = doctor()
    assert code == 1
    assert "FIX  pool sizing: 100000 workers x 1 = 100000 connections" in output
    assert "1 finding(s) need action: pool sizing" in output


CHECKS_IN_ORDER = [
    "connection",
    "migrations",
    "invalid indexes",
    "NOT VALID constraints",
    "long transactions",
    "idle in transaction",
    "blocked locks",
    "schema drift",
    "sequences",
    "transaction ID age",
    "index bloat",
    "partitions ahead",
    "pool sizing",
    "cache",
]


def doctor_json(*args) -> tuple[int, list]:
    """db_doctor --json: the whole of stdout must be the JSON document, nothing before or after."""
    out = StringIO()
    try:
        call_command("db_doctor", "--json", *args, stdout=out)
        code = 0
    except CommandError as exc:
        code = exc.returncode
    return code, json.loads(out.getvalue())


def test_json_is_a_list_of_every_check_in_order_with_the_same_fields():
    code, found = doctor_json()
    assert code == 0
    assert [f["check"] for f in found] == CHECKS_IN_ORDER
    for finding in found:
        assert set(finding) == {"check", "ok", "summary", "details", "action"}, finding
        assert finding["ok"] is True and isinstance(finding["summary"], str), finding
        assert isinstance(finding["details"], list) and isinstance(finding["action"], str)
    by_check = {f["check"]: f for f in found}
    assert by_check["migrations"]["summary"] == "all applied"
    assert by_check["invalid indexes"]["details"] == []
    assert by_check["connection"]["summary"].startswith("PostgreSQL ")


def test_json_of_a_finding_that_needs_action_carries_its_summary_details_and_action():
    other = raw_connection(autocommit=False)
    other.execute("SELECT 1")
    pid = other.info.backend_pid
    try:
        code, found = doctor_json("--idle-seconds", "0")
    finally:
        other.close()
    assert code == 1
    [idle] = [f for f in found if f["check"] == "idle in transaction"]
    assert idle["ok"] is False
    assert idle["summary"] == f"{len(idle['details'])} idle inside a transaction over 0 s"
    assert pid in [s["pid"] for s in idle["details"]]
    assert set(idle["details"][0]) == {"pid", "user", "application", "idle_s", "query"}
    assert "idle_in_transaction_session_timeout" in idle["action"]
    assert [f["check"] for f in found if not f["ok"]] == ["idle in transaction"]


def test_sessions_younger_than_the_thresholds_are_not_reported():
    other = raw_connection(autocommit=False)
    other.execute("SELECT 1")  # a transaction open, and idle, for well under a second
    pid = other.info.backend_pid
    try:
        code, output = doctor()
        quiet_code, found = findings("--long-transaction-seconds", "30", "--idle-seconds", "30")
        _, reported = findings("--long-transaction-seconds", "0", "--idle-seconds", "0")
    finally:
        other.close()
    assert code == 0, output
    assert "ok   long transactions: none over 60 s" in output
    assert "ok   idle in transaction: none" in output
    assert quiet_code == 0
    assert found["long transactions"]["details"] == found["idle in transaction"]["details"] == []
    assert pid in [s["pid"] for s in reported["long transactions"]["details"]]
    assert pid in [s["pid"] for s in reported["idle in transaction"]["details"]]


def test_a_session_waiting_for_a_lock_is_long_and_blocked_but_not_idle():
    blocker = raw_connection(autocommit=False)
    blocker.execute("LOCK TABLE dbops_testapp_parent IN ACCESS EXCLUSIVE MODE")
    waiter = raw_connection(autocommit=False)
    blocker_pid, waiter_pid = blocker.info.backend_pid, waiter.info.backend_pid
    thread = threading.Thread(
        target=lambda: waiter.execute("SELECT count(*) FROM dbops_testapp_parent")
    )
    thread.start()
    try:
        assert backends_wait_for_locks([waiter_pid])
        code, found = findings("--long-transaction-seconds", "0", "--idle-seconds", "0")
    finally:
        blocker.rollback()
        thread.join(10)
        blocker.close()
        waiter.close()
    pids = {check: [s["pid"] for s in found[check]["details"]] for check in found}
    assert code == 1
    assert waiter_pid in pids["long transactions"]
    assert waiter_pid in pids["blocked locks"]
    assert waiter_pid not in pids["idle in transaction"]  # it is running a query
    assert blocker_pid in pids["idle in transaction"]
    assert blocker_pid not in pids["blocked locks"]


def other_database_url() -> str:
    """The database the tests' own was named after (test_app: app), or the server's ``postgres``
    when that one was never created."""
    for name in (connection.settings_dict["NAME"].removeprefix("test_"), "postgres"):
        url = database_url({**connection.settings_dict, "NAME": name})
        try:
            psycopg.connect(url).close()
        except psycopg.OperationalError:
            continue
        return url
    raise AssertionError("no other database on the server to connect to")


def test_sessions_of_other_databases_on_the_server_are_not_reported():
    """Another application's database on the same server is not this one's business: there, one
    session idles in a transaction holding an advisory lock and another waits for it."""
    elsewhere = other_database_url()
    blocker = psycopg.connect(elsewhere, autocommit=False)
    blocker.execute("SELECT pg_advisory_xact_lock(4242)")
    waiter = psycopg.connect(elsewhere, autocommit=True)
    blocker_pid, waiter_pid = blocker.info.backend_pid, waiter.info.backend_pid
    thread = threading.Thread(target=lambda: waiter.execute("SELECT pg_advisory_lock(4242)"))
    thread.start()
    try:
        assert backends_wait_for_locks([waiter_pid])
        _, found = findings("--long-transaction-seconds", "0", "--idle-seconds", "0")
    finally:
        blocker.close()
        thread.join(10)
        waiter.close()
    reported = {pid for f in found.values() for pid in (s.get("pid") for s in f["details"])}
    assert {blocker_pid, waiter_pid}.isdisjoint(reported), found


def test_an_unreachable_database_is_one_finding_that_needs_action(unreachable_database):
    code, found = doctor_json()
    assert code == 1
    [finding] = found
    assert (finding["check"], finding["ok"]) == ("connection", False)
    assert finding["summary"].startswith("cannot reach the database")
    assert "DATABASES entry" in finding["action"]


def test_a_migration_not_applied_yet_is_reported_with_its_name():
    """The recorder forgets the test app's newest migration, as on a server one deploy behind."""
    recorder = MigrationRecorder(connection)
    newest = max(name for app, name in recorder.applied_migrations() if app == "dbops_testapp")
    recorder.record_unapplied("dbops_testapp", newest)
    try:
        code, output = doctor()
        _, found = findings()
    finally:
        recorder.record_applied("dbops_testapp", newest)
    assert code == 1
    assert "FIX  migrations: 1 unapplied" in output
    assert f"migration=dbops_testapp.{newest}" in output
    assert "-> run manage.py migrate" in output
    assert found["migrations"]["details"] == [{"migration": f"dbops_testapp.{newest}"}]
    assert doctor()[0] == 0
