"""db_doctor and /health/ready see what bites later, each made to fire for real: sequences near
their limit (and an int4 column fed by a bigint sequence), transaction ID age, index bloat (with
the REINDEX it recommends, which then clears it), the cache server, and the schema drift a
half-rolled-back migration leaves."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from dbops import catalog
from tests.dbops_testapp.models import Item
from tests.helpers import HEALTH_TOKEN, free_port, raw_connection

REDIS = shutil.which("redis-server")


@pytest.fixture
def token(settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}


def doctor() -> tuple[int, dict]:
    out = StringIO()
    code = 0
    try:
        call_command("db_doctor", "--json", stdout=out)
    except CommandError as exc:
        code = exc.returncode
    return code, {f["check"]: f for f in json.loads(out.getvalue())}


def ready(client) -> tuple[int, dict]:
    response = client.get("/health/ready", HTTP_X_HEALTH_TOKEN=HEALTH_TOKEN)
    return response.status_code, response.json()


@pytest.mark.django_db
def test_sequences_near_their_limit_are_reported_with_the_column_that_limits_them(client, token):
    with connection.cursor() as cursor:
        # serial: an int4 column and an int4 sequence, 93% used.
        cursor.execute("CREATE TABLE seq_serial (id serial PRIMARY KEY)")
        cursor.execute("SELECT setval('seq_serial_id_seq', 2000000000)")
        # A bigint sequence feeding an int4 column: the column runs out first, at 2^31 - 1.
        cursor.execute("CREATE SEQUENCE seq_wide AS bigint")
        cursor.execute("CREATE TABLE seq_narrow (id int DEFAULT nextval('seq_wide'))")
        cursor.execute("SELECT setval('seq_wide', 1900000000)")
        # The same value in a bigint column is nowhere near its limit.
        cursor.execute("CREATE TABLE seq_big (id bigserial PRIMARY KEY)")
        cursor.execute("SELECT setval('seq_big_id_seq', 1900000000)")
    found = {s["sequence"]: s for s in catalog.sequences_near_limit(ratio=0.75)}
    assert set(found) == {"public.seq_serial_id_seq", "public.seq_wide"}
    narrow = found["public.seq_wide"]
    assert (narrow["table"], narrow["column"], narrow["column_type"]) == (
        "seq_narrow",
        "id",
        "integer",
    )
    assert (narrow["sequence_type"], narrow["limit"]) == ("bigint", 2147483647)

    code, findings = doctor()
    assert code == 1 and findings["sequences"]["ok"] is False
    assert findings["sequences"]["summary"] == "2 past 75% of their limit"
    status, report = ready(client)
    assert status == 200  # bites later, not now
    assert any("seq_wide at 1,900,000,000 of 2,147,483,647" in w for w in report["warnings"])


@pytest.mark.django_db
def test_transaction_id_age_past_the_warning_names_the_tables_to_freeze(client, token, settings):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT age(datfrozenxid) FROM pg_database WHERE datname = current_database()"
        )
        age = cursor.fetchone()[0]
    settings.DBOPS = {**settings.DBOPS, "XID_AGE_WARN": age - 1}
    code, findings = doctor()
    xid = findings["transaction ID age"]
    assert code == 1 and xid["ok"] is False
    [this] = [d for d in xid["details"] if d.get("database") == connection.settings_dict["NAME"]]
    assert this["xid_age"] >= age
    assert any(d.get("action", "").startswith("VACUUM (FREEZE, VERBOSE) ") for d in xid["details"])
    assert any("transaction ID age" in w for w in ready(client)[1]["warnings"])

    settings.DBOPS = {**settings.DBOPS, "XID_AGE_WARN": 1_000_000_000}
    assert doctor()[1]["transaction ID age"]["ok"] is True


@pytest.mark.django_db(transaction=True)
def test_a_bloated_index_is_reported_with_the_reindex_that_fixes_it(settings):
    settings.DBOPS = {**settings.DBOPS, "INDEX_BLOAT_MIN_BYTES": 0}
    with raw_connection() as conn:
        conn.execute("CREATE TABLE bloat_probe (id int PRIMARY KEY, label text NOT NULL)")
        conn.execute('CREATE INDEX "Bloat Probe idx" ON bloat_probe (label)')
        conn.execute(
            "INSERT INTO bloat_probe SELECT i, 'label ' || i FROM generate_series(1, 100000) i"
        )
        # Nine rows in ten gone, spread over every page: the pages stay, mostly empty.
        conn.execute("DELETE FROM bloat_probe WHERE id % 10 <> 0")
        conn.execute("VACUUM ANALYZE bloat_probe")
        try:
            found = {i["index"]: i for i in catalog.index_bloat(ratio=0.5)}
            bloated = found['public."Bloat Probe idx"']
            assert bloated["table"] == "bloat_probe" and bloated["estimated_bloat"] >= 0.7
            assert bloated["action"] == 'REINDEX INDEX CONCURRENTLY public."Bloat Probe idx";'
            code, findings = doctor()
            assert code == 1 and findings["index bloat"]["ok"] is False
            # The statement it recommends runs as given, and the finding clears.
            conn.execute(bloated["action"])
            conn.execute("ANALYZE bloat_probe")
            after = {i["index"]: i for i in catalog.index_bloat(ratio=0)}
            assert after['public."Bloat Probe idx"']["estimated_bloat"] < 0.2  # a fair estimate
            assert 'public."Bloat Probe idx"' not in {i["index"] for i in catalog.index_bloat()}
        finally:
            conn.execute("DROP TABLE bloat_probe")


@pytest.mark.django_db
def test_a_cache_server_that_is_down_degrades_readiness_without_failing_it(client, token, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        },
    }
    response = client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "cache": "degraded"}
    status, report = ready(client)
    assert report["cache"] == "degraded" and "shared: ConnectionError" in report["cache_reason"]
    code, findings = doctor()
    assert code == 1 and findings["cache"]["ok"] is False
    assert findings["cache"]["summary"].startswith("degraded: shared: ConnectionError")


@pytest.mark.django_db
@pytest.mark.skipif(REDIS is None, reason="needs redis-server (apt-get install redis-server)")
def test_a_cache_server_that_answers_is_ok(client, token, settings):
    port = free_port()
    server = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{port}/0",
            }
        }
        deadline = time.monotonic() + 10
        while (report := ready(client)[1]).get("cache") != "ok":
            assert time.monotonic() < deadline, report
            time.sleep(0.05)
        assert report["status"] == "ok" and report["cache_latency_ms"] >= 0
        assert doctor()[1]["cache"]["ok"] is True
    finally:
        server.terminate()
        server.wait(10)


@pytest.mark.django_db
def test_a_column_the_models_need_and_the_database_lacks_fails_readiness(client, token):
    """As after a migration rolled back under code that still needs its column: the pages that
    touch it fail, so readiness must (the DDL is undone with the test's transaction)."""
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE dbops_testapp_item DROP COLUMN note")
        cursor.execute("ALTER TABLE dbops_testapp_uuiditem RENAME TO dbops_testapp_gone")
    with pytest.raises(DatabaseError), transaction.atomic():
        Item.objects.first()  # what a page reading items would meet
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("schema drift: 2 table(s) or column(s)")
    status, report = ready(client)
    assert report["schema_missing"] == [
        {"table": "dbops_testapp_item", "column": "note"},
        {"table": "dbops_testapp_uuiditem", "column": None},
    ]
    code, findings = doctor()
    assert code == 1 and findings["schema drift"]["details"] == report["schema_missing"]


@pytest.mark.django_db
def test_a_healthy_schema_has_no_drift_and_no_warnings(client, token):
    status, report = ready(client)
    assert status == 200 and report["schema_missing"] == [] and report["warnings"] == []
