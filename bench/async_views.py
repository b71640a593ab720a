"""Async views: the same pages under WSGI (gunicorn, threads) and ASGI (uvicorn), same concurrency.

Two workloads, each at 16 and 64 concurrent keep-alive clients, in one run against a throwaway
PostgreSQL, both servers with the same worker processes and Django's psycopg pool:

1. a slow upstream call (500 ms, simulated): ``time.sleep`` in a sync view, ``asyncio.sleep`` in
   an async view (bench/urls.py);
2. database-bound: the product catalog page (logged in: session, user, a page of products, a
   count, a template) as a sync view (bench/urls.py) and as the real async view
   (``orders.views.product_list_view``, async ORM).

Three configurations each: the sync view under gunicorn (WSGI), the async view under uvicorn
(ASGI), and the sync view under uvicorn (Django runs it in a thread of its request).

Writes bench/results/async_views.md.

    .venv/bin/python bench/async_views.py [--seconds 8] [--workers 1] [--threads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import percentile, serving, table, write_results  # noqa: E402
from devdb import embedded  # noqa: E402

CLIENTS = (16, 64)
PRODUCTS = 200


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(kind: str, port: int, workers: int, threads: int) -> list[str]:
    if kind == "wsgi":
        return [
            *("gunicorn", "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(workers)),
            *("--worker-class", "gthread", "--threads", str(threads), "--keep-alive", "5"),
        ]
    return [
        *("uvicorn", "config.asgi:application", "--port", str(port), "--workers", str(workers)),
        *("--lifespan", "off", "--no-access-log", "--log-level", "warning"),
    ]


def serve(kind: str, url: str, port: int, workers: int, threads: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    # The pool for both: Django advises it under ASGI, where a request's queries run in a thread
    # of that request and a persistent connection would leave with the thread.
    env.update(
        DJANGO_SETTINGS_MODULE="bench.site",
        DATABASE_URL=url,
        DB_POOL="true",
        DB_POOL_MIN_SIZE="2",
        DB_POOL_MAX_SIZE=str(threads),
    )
    return serving(
        server_command(kind, port, workers, threads), env, port, "/health/live", f"{kind} server"
    )


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = int((await reader.readline()).split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers


async def _client(port, request, measure_from, stop_at, latencies, errors, counts) -> None:
    loop = asyncio.get_running_loop()
    reader = writer = None
    while (started := loop.time()) < stop_at:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, headers = await asyncio.wait_for(_response(reader), 30)
            ok = status == 200
            counts.add(headers.get("x-db-query-count"))
            if headers.get("connection", "").lower() == "close":
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError, IndexError):
            ok = False
            writer = None
        if started >= measure_from:
            if ok:
                latencies.append((loop.time() - started) * 1000)
            else:
                errors.append(1)
    if writer is not None:
        writer.close()


async def load(port: int, path: str, cookie: str, clients: int, seconds: float) -> dict:
    """``clients`` keep-alive connections sending GET ``path`` back to back; 1 s of warm-up."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode(
        "latin-1"
    )
    loop = asyncio.get_running_loop()
    measure_from = loop.time() + 1
    stop_at = measure_from + seconds
    latencies: list[float] = []
    errors: list[int] = []
    counts: set[str | None] = set()
    await asyncio.gather(
        *(
            _client(port, request, measure_from, stop_at, latencies, errors, counts)
            for _ in range(clients)
        )
    )
    return {"latencies": latencies, "errors": len(errors), "query_counts": counts}


def login_cookie() -> str:
    """A session of a demo shopper, created in the database the servers use."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user("bench-async", password="bench-pass-2024")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


WORKLOADS = {
    # workload: (sync view, async view)
    "slow upstream (500 ms wait)": ("/bench/upstream-sync", "/bench/upstream-async"),
    "database-bound (catalog page)": ("/bench/products-sync/", "/orders/products/"),
}
CONFIGS = [
    # (label, server, which view)
    ("WSGI, sync view", "wsgi", 0),
    ("ASGI, async view", "asgi", 1),
    ("ASGI, sync view", "asgi", 0),
]


def measure(url: str, cookie: str, args) -> list[list[object]]:
    """Both servers up at once (the idle one costs nothing); the configurations of each workload
    run back to back, so a change in the machine's load falls on all of them alike."""
    ports = {kind: free_port() for kind in ("wsgi", "asgi")}
    processes = [serve(kind, url, port, args.workers, args.threads) for kind, port in ports.items()]
    results = {}
    try:
        for workload, paths in WORKLOADS.items():
            for clients in CLIENTS:
                for label, kind, view in CONFIGS:
                    result = asyncio.run(
                        load(ports[kind], paths[view], cookie, clients, args.seconds)
                    )
                    results[label, workload, clients] = result
                    rps = len(result["latencies"]) / args.seconds
                    print(f"{label} {workload} x{clients}: {rps:.0f} req/s", file=sys.stderr)
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
    rows = []
    for workload in WORKLOADS:
        for clients in CLIENTS:
            wsgi_rps = (
                len(results["WSGI, sync view", workload, clients]["latencies"]) / args.seconds
            )
            for label, _, _ in CONFIGS:
                result = results[label, workload, clients]
                rps = len(result["latencies"]) / args.seconds
                queries = ", ".join(sorted(str(c) for c in result["query_counts"] if c))
                rows.append(
                    [
                        workload,
                        label,
                        clients,
                        rps,
                        percentile(result["latencies"], 50),
                        percentile(result["latencies"], 99),
                        result["errors"],
                        queries or "0",
                        f"{rps / wsgi_rps:.2f}x" if wsgi_rps else "-",
                    ]
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8, help="measured time per run")
    parser.add_argument("--workers", type=int, default=1, help="processes per server")
    parser.add_argument("--threads", type=int, default=16, help="gunicorn threads per worker")
    args = parser.parse_args()

    with embedded.temporary_server(settings={"max_connections": "100"}) as server:
        url = server.url()
        os.environ["DATABASE_URL"] = url
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.site")
        import django

        django.setup()
        from django.core.management import call_command

        from orders.demo import products_seed

        call_command("migrate", verbosity=0)
        products_seed(PRODUCTS)
        cookie = login_cookie()
        rows = measure(url, cookie, args)

    body = (
        f"{args.workers} worker process{'es' if args.workers > 1 else ''} per server: gunicorn "
        f"`gthread` with {args.threads} threads per process (WSGI) and uvicorn (ASGI); Django's psycopg pool (at most {args.threads} "
        "connections per worker) for both; PostgreSQL 18 (embedded) over TCP on the same machine. "
        "Concurrent keep-alive clients from one asyncio process on the same 2 cores; "
        f"{args.seconds:g} s measured per run after 1 s of warm-up. The catalog page: "
        f"{PRODUCTS} products, 50 per page, logged in.\n\n"
        + table(
            [
                "workload",
                "server, view",
                "clients",
                "requests/s",
                "p50 ms",
                "p99 ms",
                "errors",
                "X-DB-Query-Count",
                "vs WSGI",
            ],
            rows,
        )
    )
    write_results("async_views", "Async views: WSGI vs ASGI", "bench/async_views.py", body)


if __name__ == "__main__":
    main()
