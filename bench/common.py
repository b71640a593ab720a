"""What every benchmark shares: the machine's description, percentiles, and the results table."""

from __future__ import annotations

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
    for thread in pool:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in pool:
        thread.join()
    if crashed:
        raise crashed[0]
    flat = [x for per in latencies for x in per]
    return {
        "done": len(flat),
        "latencies": flat,
        "refused": sum(refused_count),
        "errors": sum(error_count),
    }
