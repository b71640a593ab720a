"""db_doctor and /health/ready, each condition created for real."""

import json
import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection

from tests.factories import customer_create
from tests.helpers import HEALTH_HEADERS, HEALTH_TOKEN, raw_connection

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
    settings.HEALTH_TOKEN = HEALTH_TOKEN
    customer_create(region="south")
    customer_create(region="south")
    with connection.cursor() as cursor, pytest.raises(IntegrityError):
        cursor.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY doctor_bad_idx ON orders_customer (region)"
        )
    try:
        code, found = findings()
        assert code == 1
        assert not found["invalid indexes"]["ok"]
        assert found["invalid indexes"]["details"] == [
            {"index": "doctor_bad_idx", "table": "orders_customer"}
        ]
        assert client.get("/health/ready", headers=HEALTH_HEADERS).json()["invalid_indexes"] == [
            {"index": "doctor_bad_idx", "table": "orders_customer"}
        ]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP INDEX CONCURRENTLY doctor_bad_idx")


def test_not_valid_constraint_is_reported_here_and_in_health(client, settings):
    settings.HEALTH_TOKEN = HEALTH_TOKEN
    with connection.cursor() as cursor:
        cursor.execute(
            "ALTER TABLE orders_product ADD CONSTRAINT doctor_check CHECK (stock < 1000000000) NOT VALID"
        )
    try:
        code, found = findings()
        assert code == 1
        assert found["NOT VALID constraints"]["details"] == [
            {"constraint": "doctor_check", "table": "orders_product"}
        ]
        assert client.get("/health/ready", headers=HEALTH_HEADERS).json()[
            "not_valid_constraints"
        ] == [{"constraint": "doctor_check", "table": "orders_product"}]
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE orders_product DROP CONSTRAINT doctor_check")


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
    blocker.execute("LOCK TABLE orders_product IN ACCESS EXCLUSIVE MODE")
    waiter = raw_connection()
    thread = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM orders_product"))
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
    settings.WEB_CONCURRENCY = 100_000
    code, output = doctor()
    assert code == 1
    assert "FIX  pool sizing: 100000 workers x 1 = 100000 connections" in output
    assert "1 finding(s) need action: pool sizing" in output
