"""Connection reuse: CONN_MAX_AGE=0 vs persistent connections vs Django's psycopg pool.

A one-query view under gunicorn, over TCP to a throwaway PostgreSQL that requires a password
(scram-sha-256, as production servers do), loaded by concurrent HTTP clients for a fixed time in
each configuration, all in one run. Writes bench/results/connections.md.

    .venv/bin/python bench/connections.py [--seconds 10] [--clients 8] [--workers 4]
"""

from __future__ import annotations

import argparse
import http.client
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, percentile, table, write_results  # noqa: E402
from devdb import embedded  # noqa: E402

CONFIGS = [
    ("CONN_MAX_AGE=0 (new connection per request)", {"DB_CONN_MAX_AGE": "0"}),
    ("CONN_MAX_AGE=60 + health checks", {"DB_CONN_MAX_AGE": "60", "DB_CONN_HEALTH_CHECKS": "true"}),
    (
        "DB_POOL=true (psycopg pool, max 4)",
        {"DB_POOL": "true", "DB_POOL_MIN_SIZE": "1", "DB_POOL_MAX_SIZE": "4"},
    ),
]


def load(
    port: int, seconds: float, clients: int, warmup: float = 1.0
) -> tuple[int, list[float], int]:
    """Run ``clients`` threads hitting the view; return (requests, latencies in ms, errors)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    start = time.monotonic()
    measure_from = start + warmup
    stop = measure_from + seconds

    def client(i: int) -> None:
        while (now := time.monotonic()) < stop:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/bench/one-query")
                response = conn.getresponse()
                response.read()
                conn.close()
                ok = response.status == 200
            except OSError:
                ok = False
            done = time.monotonic()
            if now >= measure_from:
                if ok:
                    latencies[i].append((done - now) * 1000)
                else:
                    errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [x for per in latencies for x in per]
    return len(flat), flat, sum(errors)


def serve(url: str, env_overrides: dict[str, str], port: int, workers: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    env.update(DJANGO_SETTINGS_MODULE="bench.site", DATABASE_URL=url, **env_overrides)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            str(workers),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/bench/one-query")
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"gunicorn did not start: {process.stderr.read().decode()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="measured time per configuration")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    args = parser.parse_args()

    rows = []
    with embedded.temporary_server(
        password="bench-secret", settings={"max_connections": "200"}
    ) as server:
        url = server.url(password="bench-secret")
        version = server.pgdata
        import psycopg

        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        baseline = None
        for label, overrides in CONFIGS:
            port = 18000 + len(rows)
            process = serve(url, overrides, port, args.workers)
            try:
                count, latencies, errors = load(port, args.seconds, args.clients)
            finally:
                process.terminate()
                process.wait(10)
            rps = count / args.seconds
            baseline = baseline or rps
            rows.append(
                [
                    label,
                    rps,
                    percentile(latencies, 50),
                    percentile(latencies, 99),
                    errors,
                    f"{rps / baseline:.2f}x",
                ]
            )
            print(f"{label}: {rps:.0f} req/s", file=sys.stderr)

    body = (
        f"gunicorn {args.workers} sync workers, {args.clients} concurrent clients, {args.seconds:g} s measured "
        f"per configuration after 1 s warm-up; PostgreSQL {version} over TCP with a scram-sha-256 password.\n\n"
        + table(
            ["configuration", "requests/s", "p50 ms", "p99 ms", "errors", "vs CONN_MAX_AGE=0"], rows
        )
    )
    write_results("connections", "Connection reuse", "make bench (bench/connections.py)", body)


if __name__ == "__main__":
    main()
