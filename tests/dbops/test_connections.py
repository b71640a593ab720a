import json

import pytest
from django.db import connection

from tests.helpers import (
    HEALTH_HEADERS,
    HEALTH_TOKEN,
    gunicorn,
    http_get,
    http_json,
    raw_connection,
    wsgi_request,
)


@pytest.fixture(autouse=True)
def health_token(settings):
    settings.DBOPS = {**settings.DBOPS, "HEALTH_TOKEN": HEALTH_TOKEN}


def backend_pid_of_request() -> tuple[int, int | None]:
    status, _, body = wsgi_request("/health/ready", headers=HEALTH_HEADERS)
    report = json.loads(body)
    return status, report.get("database", {}).get("connections", {}).get("backend_pid")


def terminate(pid: int) -> None:
    with raw_connection() as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_persistent_connection_is_reused_across_requests():
    _, first = backend_pid_of_request()
    _, second = backend_pid_of_request()
    assert isinstance(first, int) and first == second


@pytest.mark.django_db(transaction=True)
def test_killed_persistent_connection_is_replaced_when_health_checks_are_on():
    status, pid = backend_pid_of_request()
    assert status == 200
    terminate(pid)
    status, new_pid = backend_pid_of_request()
    assert status == 200
    assert new_pid != pid


@pytest.fixture
def health_checks_off():
    connection.close()
    connection.settings_dict["CONN_HEALTH_CHECKS"] = False
    yield
    connection.settings_dict["CONN_HEALTH_CHECKS"] = True
    connection.close()


@pytest.mark.django_db(transaction=True)
def test_without_health_checks_a_killed_connection_costs_a_second_run_not_an_error(
    health_checks_off, caplog
):
    """What the health checks buy: without them the next request meets the dead connection. It had
    written nothing and is a GET, so it runs again on a fresh connection (dbops.rerun); the
    health check spares that second run."""
    status, pid = backend_pid_of_request()
    assert status == 200
    terminate(pid)
    with caplog.at_level("WARNING", logger="dbops"):
        status, _, body = wsgi_request("/health/ready", headers=HEALTH_HEADERS)
    assert status == 200
    assert json.loads(body)["database"]["connections"]["backend_pid"] != pid
    assert [r.getMessage() for r in caplog.records if r.name == "dbops"] == [
        "GET /health/ready: the connection to 'default' broke; running it again"
    ]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "mode, env", [("persistent", {}), ("pool", {"DB_POOL": "true", "DB_POOL_MAX_SIZE": "4"})]
)
def test_gunicorn_serves_requests_in_each_connection_mode(mode, env):
    with gunicorn(**env) as base:
        for _ in range(5):
            status, report = http_json(base + "/health/ready", headers=HEALTH_HEADERS)
            assert status == 200, report
        reuse = report["database"]["connections"]
        assert reuse["mode"] == mode
        if mode == "pool":
            assert reuse["pool_max"] == 4
            assert reuse["requests_num"] >= 5
        status, headers, _ = http_get(base + "/health/ready")
        assert int(headers["X-DB-Query-Count"]) > 0
