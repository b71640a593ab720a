"""A real Prometheus (Debian's package) scrapes /health/metrics from the app under gunicorn, with
the health token as a bearer token and prometheus_client's multi-process mode on, and serves the
series back through its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from devdb import embedded
from tests.helpers import HEALTH_TOKEN, free_port, gunicorn, http_get

PROMETHEUS = Path("/usr/bin/prometheus")

pytestmark = pytest.mark.django_db(transaction=True)


def prometheus_required() -> None:
    """Skip, naming the package, when Prometheus is absent; under CI=true fail instead."""
    if PROMETHEUS.exists():
        return
    message = "the Prometheus test needs Debian's prometheus (apt-get install prometheus)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


def query(port: int, promql: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    status, _, body = http_get(url, timeout=5)
    assert status == 200, body
    return json.loads(body)["data"]["result"]


def prometheus_config(target: str, token: str) -> dict:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {
                "job_name": "django",
                "metrics_path": "/health/metrics",
                "authorization": {"type": "Bearer", "credentials": token},
                "static_configs": [{"targets": [target]}],
            }
        ],
    }


def test_prometheus_scrapes_the_app_and_serves_the_series_back():
    prometheus_required()
    work = Path(tempfile.mkdtemp(prefix="prometheus-"))
    multiproc = Path(tempfile.mkdtemp(prefix="prom-multiproc-"))
    # Prometheus does not need root: as root, it runs as the embedded server's system user.
    run_as = embedded._run_as()
    try:
        with gunicorn(PROMETHEUS_MULTIPROC_DIR=str(multiproc)) as base:
            (work / "prometheus.yml").write_text(
                json.dumps(prometheus_config(base.removeprefix("http://"), HEALTH_TOKEN))
            )
            (work / "data").mkdir()
            if run_as:
                for path in (work, work / "data", work / "prometheus.yml"):
                    os.chown(path, run_as["user"], run_as["group"])
            port = free_port()
            server = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                cwd=work,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                **run_as,
            )
            try:
                series = wait_for_series(server, port)
            finally:
                server.terminate()
                server.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(multiproc, ignore_errors=True)
    assert series["up"] == "1"  # the scrape got a 200 and parsed it
    assert series["database_up"] == "1"
    assert float(series["reads"]) >= 1


def wait_for_series(server: subprocess.Popen, port: int) -> dict[str, str]:
    """Poll Prometheus's API until it has scraped the app; the values it serves back."""
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, server.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline, "Prometheus did not scrape the app in 90 s"
        try:
            up = query(port, 'up{job="django"}')
            reads = query(port, 'sum(dbops_db_queries_total{job="django", kind="read"})')
            database = query(port, 'dbops_database_up{job="django"}')
        except OSError:
            up = reads = database = []
        if up and reads and database:
            return {
                "up": up[0]["value"][1],
                "reads": reads[0]["value"][1],
                "database_up": database[0]["value"][1],
            }
        time.sleep(0.2)
