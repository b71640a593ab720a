"""/health/metrics: Prometheus text, for staff and token holders only, never an error page; the
series it promises. A real Prometheus scraping it: tests/dbops/test_metrics_prometheus.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import OperationalError, connection, transaction
from prometheus_client.parser import text_string_to_metric_families

from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.models import BackfillRun
from dbops.retry import retry_transaction
from dbops.timeouts import lock_timeout
from tests.dbops_testapp.factories import person_create
from tests.helpers import ROOT, raw_connection, subprocess_env, wsgi_request

TOKEN = "metrics-token-9c1e"


@pytest.fixture
def token(settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": TOKEN}
    return TOKEN


def samples(body: bytes) -> dict[tuple, float]:
    """{(name, (label, value)...): value} of a Prometheus text exposition."""
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def scrape(client, **headers):
    return client.get("/health/metrics", **{f"HTTP_{k}": v for k, v in headers.items()})


@pytest.mark.django_db
def test_strangers_get_401_with_the_challenge_and_non_staff_403(client, token):
    response = scrape(client)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"dbops_" not in response.content
    assert scrape(client, AUTHORIZATION="Bearer wrong").status_code == 401
    assert scrape(client, X_HEALTH_TOKEN="wrong").status_code == 401
    assert scrape(client, AUTHORIZATION=f"Basic {TOKEN}").status_code == 401
    client.force_login(person_create())
    assert scrape(client).status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    "headers", [{"AUTHORIZATION": f"Bearer {TOKEN}"}, {"X_HEALTH_TOKEN": TOKEN}, "staff"]
)
def test_staff_and_token_holders_get_prometheus_text(client, token, headers):
    if headers == "staff":
        client.force_login(person_create(is_staff=True))
        headers = {}
    response = scrape(client, **headers)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    found = samples(response.content)
    assert value(found, "dbops_database_up") == 1
    assert value(found, "dbops_db_queries_total", alias="default", kind="read") >= 1


@pytest.mark.django_db
def test_no_token_configured_means_staff_only(client, settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": ""}
    assert scrape(client, AUTHORIZATION="Bearer ").status_code == 401
    assert scrape(client, X_HEALTH_TOKEN="").status_code == 401


@pytest.mark.django_db
def test_metrics_switched_off_are_a_404(client, token, settings):
    settings.DBOPS = {**settings.DBOPS, "METRICS_ENABLED": False}
    assert scrape(client, AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_database_is_a_series_not_an_error(token, unreachable_database):
    status, _, body = wsgi_request("/health/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    assert value(samples(body), "dbops_database_up") == 0
    # A stranger, whose session cannot be read either: still a 401, not an error page.
    assert wsgi_request("/health/metrics")[0] == 401


@pytest.mark.django_db
def test_queries_and_their_time_are_counted_per_alias_and_kind(client, token):
    before = samples(scrape(client, X_HEALTH_TOKEN=TOKEN).content)
    with connection.cursor() as cursor:
        for _ in range(5):
            cursor.execute("SELECT 1")
        cursor.execute("CREATE TEMPORARY TABLE metrics_probe (id int)")
        cursor.execute("SELECT pg_sleep(0.05)")
    after = samples(scrape(client, X_HEALTH_TOKEN=TOKEN).content)

    def grew(name, kind):
        return value(after, name, alias="default", kind=kind) - (
            value(before, name, alias="default", kind=kind) or 0
        )

    # The scrape itself reads too (the session, the user, the backfill runs).
    assert grew("dbops_db_queries_total", "read") >= 6
    assert grew("dbops_db_queries_total", "write") >= 1
    assert grew("dbops_db_query_seconds_total", "read") >= 0.05


@pytest.mark.django_db(transaction=True)
def test_retries_and_lock_timeouts_are_counted_by_sqlstate(client, token):
    def counted() -> tuple[float, float]:
        found = samples(scrape(client, X_HEALTH_TOKEN=TOKEN).content)
        return (
            value(found, "dbops_retries_total", sqlstate=LOCK_NOT_AVAILABLE) or 0,
            value(found, "dbops_db_errors_total", alias="default", sqlstate=LOCK_NOT_AVAILABLE)
            or 0,
        )

    @retry_transaction(attempts=2, base_delay=0.001)
    def blocked():
        with transaction.atomic(), lock_timeout(20), connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM dbops_backfillrun")

    retries, errors = counted()
    holder = raw_connection(autocommit=False)
    holder.execute("LOCK TABLE dbops_backfillrun IN ACCESS EXCLUSIVE MODE")
    try:
        with pytest.raises(OperationalError) as raised:
            blocked()
    finally:
        holder.rollback()
        holder.close()
    assert sqlstate(raised.value) == LOCK_NOT_AVAILABLE
    # Two attempts, both stopped by the lock timeout: one retry, two errors.
    assert counted() == (retries + 1, errors + 2)


@pytest.mark.django_db
def test_health_checks_and_backfill_runs_are_series(client, token):
    client.get("/health/ready")
    run = BackfillRun.objects.create(
        target="dbops_testapp.Item.name_upper",
        options={},
        rows_done=1500,
        keys_scanned=1500,
        rows_estimate=6000,
        rate=250.0,
        eta_s=18.0,
        pauses={"vacuum": {"count": 2, "seconds": 4.5, "last": "autovacuum pid 1"}},
    )
    found = samples(scrape(client, AUTHORIZATION=f"Bearer {TOKEN}").content)
    assert value(found, "dbops_health_checks_total", endpoint="ready", result="ok") >= 1
    key = {"target": run.target, "database": "default", "run": str(run.pk)}
    assert value(found, "dbops_backfill_rows_done", **key) == 1500
    assert value(found, "dbops_backfill_progress_ratio", **key) == 0.25
    assert value(found, "dbops_backfill_rows_per_second", **key) == 250
    assert value(found, "dbops_backfill_eta_seconds", **key) == 18
    assert value(found, "dbops_backfill_status", status="running", **key) == 1
    assert value(found, "dbops_backfill_status", status="paused", **key) == 0
    assert value(found, "dbops_backfill_pauses_total", indicator="vacuum", **key) == 2
    assert value(found, "dbops_backfill_paused_seconds_total", indicator="vacuum", **key) == 4.5
    assert value(found, "dbops_backfill_pauses_total", indicator="wal_rate", **key) == 0


COUNT_IN_A_WORKER = """
import django
django.setup()
from dbops import metrics
metrics.QUERIES.labels("default", "read").inc({n})
print(metrics.exposition().decode())
"""


@pytest.mark.django_db
def test_with_a_multiprocess_directory_every_worker_process_is_added_up(tmp_path):
    """As under gunicorn with several workers and PROMETHEUS_MULTIPROC_DIR: whichever worker
    answers the scrape, it reports the sum of all of them."""
    env = subprocess_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path), EMBEDDED_PG_AUTOSTART="false")
    outputs = [
        subprocess.run(
            [sys.executable, "-c", COUNT_IN_A_WORKER.format(n=n)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for n in (1000, 2000)
    ]
    first, second = (samples(out.encode()) for out in outputs)
    reads = ("dbops_db_queries_total", (("alias", "default"), ("kind", "read")))
    assert 1000 <= first[reads] < 2000  # its own, plus the queries its setup ran
    assert second[reads] >= 3000  # the first worker's too
