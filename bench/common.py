"""What every benchmark shares: the machine's description, percentiles, and the results table."""

from __future__ import annotations

import http.client
import logging
import os
import platform
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Python {platform.python_version()}"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=1000, method="inclusive")[int(pct * 10) - 1]


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(name: str, title: str, command: str, body: str) -> Path:
    """Write bench/results/<name>.md and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    text = (
        f"# {title}\n\n"
        f"Command: `{command}`  \n"
        f"Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {git_revision()}  \n"
        f"Machine: {machine()}\n\n{body.strip()}\n"
    )
    path.write_text(text)
    print(text)
    return path


class LogCounter(logging.Handler):
    """Counts the records a logger emits (retries, lost races). ``Handler.handle`` holds the
    handler's own lock around ``emit``, so the count needs no lock of its own."""

    def __init__(self, logger_name: str, level: int = logging.DEBUG):
        super().__init__(level)
        self.count = 0
        logger = logging.getLogger(logger_name)
        logger.addHandler(self)
        logger.setLevel(level)
        logger.propagate = False

    def emit(self, record):
        self.count += 1


def threads_for(
    threads: int,
    seconds: float,
    worker: Callable[[int], AbstractContextManager[Callable[[], None]]],
    *,
    refused: tuple[type[BaseException], ...] = (),
    errors: tuple[type[BaseException], ...] = (),
) -> dict:
    """Run ``threads`` threads for ``seconds``, all starting together.

    ``worker(i)`` is a context manager giving thread ``i`` its operation (and holding whatever the
    thread needs, such as its own connection). Each call is timed. Exceptions in ``refused`` (the
    operation said no, e.g. insufficient funds) and in ``errors`` (e.g. a database error) are
    counted; anything else is a bug in the benchmark and is raised once every thread has stopped.
    """
    from django.db import connection

    latencies: list[list[float]] = [[] for _ in range(threads)]
    refused_count = [0] * threads
    error_count = [0] * threads
    crashed: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        try:
            with worker(i) as operation:
                barrier.wait()
                while (started := time.perf_counter()) < stop_at[0]:
                    try:
                        operation()
                    except refused:
                        refused_count[i] += 1
                        continue
                    except errors:
                        error_count[i] += 1
                        continue
                    latencies[i].append((time.perf_counter() - started) * 1000)
        except BaseException as exc:  # noqa: BLE001 (re-raised in the main thread)
            crashed.append(exc)
            barrier.abort()
        finally:
            connection.close()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    cpu_before = time.process_time()
    for thread in pool:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in pool:
        thread.join()
    client_cpu = time.process_time() - cpu_before
    if crashed:
        raise crashed[0]
    flat = [x for per in latencies for x in per]
    return {
        "done": len(flat),
        "latencies": flat,
        "refused": sum(refused_count),
        "errors": sum(error_count),
        "client_cpu": client_cpu,
    }


def processes_for(
    processes: int,
    seconds: float,
    worker: Callable[[int], AbstractContextManager[Callable[[], None]]],
    *,
    refused: tuple[type[BaseException], ...] = (),
    errors: tuple[type[BaseException], ...] = (),
    collect: Callable[[], object] = lambda: None,
) -> dict:
    """``threads_for`` with one thread in each of ``processes`` forked processes, started together:
    the same work without one interpreter lock shared between the workers.

    ``collect()`` runs in each process after its run (e.g. to read what its workers measured); its
    values come back as the result's ``collected``. A crash in a process is raised here.
    """
    import multiprocessing

    from django.db import connections

    connections.close_all()  # a connection must not be shared with the children
    context = multiprocessing.get_context("fork")
    start = context.Barrier(processes + 1)
    results = context.Queue()

    def child(p: int) -> None:
        try:
            start.wait()
            result = threads_for(1, seconds, lambda _: worker(p), refused=refused, errors=errors)
            results.put(("ok", result, collect()))
        except BaseException as exc:  # noqa: BLE001 (sent to the parent, which raises)
            results.put(("crash", f"{type(exc).__name__}: {exc}", None))

    pool = [context.Process(target=child, args=(p,)) for p in range(processes)]
    for process in pool:
        process.start()
    start.wait()
    answers = [results.get() for _ in pool]
    for process in pool:
        process.join()
    crashes = [detail for status, detail, _ in answers if status == "crash"]
    if crashes:
        raise RuntimeError(f"a benchmark process crashed: {crashes[0]}")
    parts = [result for _, result, _ in answers]
    return {
        "done": sum(r["done"] for r in parts),
        "latencies": [x for r in parts for x in r["latencies"]],
        "refused": sum(r["refused"] for r in parts),
        "errors": sum(r["errors"] for r in parts),
        "client_cpu": sum(r["client_cpu"] for r in parts),
        "collected": [value for _, _, value in answers],
    }


def backend_cpu_seconds(pid: int) -> float:
    """CPU time used so far by the PostgreSQL backend ``pid`` (``pg_backend_pid()``) of a server on
    this machine: the first field of /proc/<pid>/schedstat, in nanoseconds, or utime + stime of
    /proc/<pid>/stat (clock ticks) where schedstat is missing."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serving(
    command: list[str], env: dict[str, str], port: int, path: str, what: str
) -> subprocess.Popen:
    """Start a web server (``python -m <command>``) and return it once ``path`` answers 200 on
    ``port``; SystemExit with the end of its stderr if it does not within 30 s."""
    import sys
    import tempfile

    # A file, not a pipe: a server that logs more than a pipe holds (64 KiB) while nobody reads
    # the pipe blocks in write(2) and stops answering in the middle of a measurement.
    stderr = tempfile.TemporaryFile()
    process = subprocess.Popen(
        [sys.executable, "-m", *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    process.wait()
    stderr.seek(0)
    raise SystemExit(f"{what} did not start: {stderr.read().decode(errors='replace')[-3000:]}")
