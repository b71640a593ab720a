"""Connection reuse: CONN_MAX_AGE=0 vs persistent connections vs Django's psycopg pool, and
many web workers through PgBouncer (transaction mode) vs directly.

A one-query view under gunicorn, over TCP to a throwaway PostgreSQL that requires a password
(scram-sha-256, as production servers do), loaded by concurrent HTTP clients for a fixed time in
each configuration, all in one run. Then many more workers than server connections: gunicorn with
``--many-workers`` workers directly (one server connection each) and through a PgBouncer in
transaction mode with ``--pgbouncer-pool`` server connections (``DB_PGBOUNCER=true``), with the
server connections each used counted. Writes bench/results/connections.md.

    .venv/bin/python bench/connections.py [--seconds 10] [--clients 8] [--workers 4]
        [--many-workers 16] [--many-clients 32] [--pgbouncer-pool 4]
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

from bench.common import percentile, serving, table, write_results  # noqa: E402
from devdb import embedded, pgbouncer  # noqa: E402

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
    command = ["gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers)]
    return serving(command, env, port, "/bench/one-query", "gunicorn")


def server_connections(url: str) -> int:
    """Client backends of the application on the server now."""
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'django-pg-patterns'"
        ).fetchone()[0]


def measure(url: str, overrides: dict, port: int, workers: int, seconds: float, clients: int):
    """(requests, latencies, errors, server connections at the end of the load)."""
    process = serve(url, overrides, port, workers)
    try:
        count, latencies, errors = load(port, seconds, clients)
        held = server_connections(url)
    finally:
        process.terminate()
        process.wait(10)
    return count, latencies, errors, held


def pooler_rows(server, url: str, args) -> list[list[object]]:
    """Many workers directly vs through PgBouncer, in the same run."""
    rows = []
    baseline = None
    with pgbouncer.running(
        str(server.socket_dir), server.port, pool_size=args.pgbouncer_pool
    ) as bouncer:
        configs = [
            (f"{args.many_workers} workers, direct, CONN_MAX_AGE=60", url, {}),
            (
                f"{args.many_workers} workers through PgBouncer (transaction mode, "
                f"{args.pgbouncer_pool} server connections), CONN_MAX_AGE=60",
                bouncer.url("app"),
                {"DB_PGBOUNCER": "true"},
            ),
        ]
        for label, target, overrides in configs:
            count, latencies, errors, held = measure(
                target,
                {"DB_CONN_MAX_AGE": "60", **overrides},
                18100 + len(rows),
                args.many_workers,
                args.seconds,
                args.many_clients,
            )
            # Server connections as the server sees them (through PgBouncer: its pool).
            held = server_connections(url) if overrides else held
            rps = count / args.seconds
            baseline = baseline or rps
            rows.append(
                [
                    label,
                    rps,
                    percentile(latencies, 50),
                    percentile(latencies, 99),
                    errors,
                    held,
                    f"{rps / baseline:.2f}x",
                ]
            )
            print(f"{label}: {rps:.0f} req/s, {held} server connections", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10, help="measured time per configuration")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--many-workers", type=int, default=16, help="workers in the pooler run")
    parser.add_argument("--many-clients", type=int, default=32, help="clients in the pooler run")
    parser.add_argument(
        "--pgbouncer-pool", type=int, default=4, help="PgBouncer server connections"
    )
    args = parser.parse_args()

    rows = []
    with embedded.temporary_server(
        password="bench-secret", settings={"max_connections": "200"}
    ) as server:
        url = server.url(password="bench-secret")
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
        many = pooler_rows(server, server.socket_url(), args)

    body = (
        f"gunicorn {args.workers} sync workers, {args.clients} concurrent clients, {args.seconds:g} s measured "
        f"per configuration after 1 s warm-up; PostgreSQL {version} over TCP with a scram-sha-256 password.\n\n"
        + table(
            ["configuration", "requests/s", "p50 ms", "p99 ms", "errors", "vs CONN_MAX_AGE=0"], rows
        )
    )
    body += (
        f"\n\n## Many workers, few server connections: PgBouncer\n\n"
        f"gunicorn {args.many_workers} sync workers, {args.many_clients} concurrent clients, "
        f"{args.seconds:g} s each; PgBouncer 1.18 (Debian) in transaction mode in front of the same "
        "server, the app with DB_PGBOUNCER=true. Server connections: the application's backends on "
        "the server at the end of the load.\n\n"
        + table(
            [
                "configuration",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "server connections",
                "vs direct",
            ],
            many,
        )
    )
    write_results("connections", "Connection reuse", "make bench (bench/connections.py)", body)


if __name__ == "__main__":
    main()
