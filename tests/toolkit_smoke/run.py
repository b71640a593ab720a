"""The toolkit as a third party gets it: build the wheels, install them in a fresh venv beside a
fresh ``django-admin startproject`` outside this tree, and run dbops there.

    python tests/toolkit_smoke/run.py [--keep]        (make toolkit-smoke)

The fresh project has its own app (``shop``) and nothing of this repository: the venv holds the
wheels and their dependencies only (``config``, ``accounts``, ``orders``, ``core`` are shown not
importable), settings add what docs/dbops/installation.md says and no ``DBOPS`` at all, and there
is no template directory, so every page dbops renders comes from dbops. PostgreSQL is the wheel's
``devdb`` extra: the embedded server and a streaming hot standby of it, under the temporary
directory. Each step prints one line; the first failure prints its output and exits 1.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = Path(__file__).resolve().parent / "project"
THIS_PROJECT = ("config", "accounts", "orders", "core")
ROWS = 2000


class SmokeFailure(Exception):
    pass


class Smoke:
    def __init__(self, base: Path, python: str):
        self.base = base
        self.base_python = python
        self.venv = base / "venv"
        self.site = base / "mysite"
        self.python = self.venv / "bin" / "python"
        self.started = time.monotonic()
        self.server: subprocess.Popen | None = None

    # -- running things ---------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """Nothing of this checkout's environment: no PYTHONPATH, settings module or database URL."""
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(self.base)),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }

    def run(self, *args, cwd: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(a) for a in args],
            cwd=cwd or self.site,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if ok and result.returncode != 0:
            raise SmokeFailure(
                f"{' '.join(map(str, args))} exited {result.returncode}\n"
                f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            )
        return result

    def manage(self, *args, ok: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.python, "manage.py", *args, ok=ok)

    def shell(self, code: str) -> str:
        return self.manage("shell", "-v", "0", "-c", code).stdout.strip()

    def step(self, what: str, action: Callable[[], str | None]) -> None:
        began = time.monotonic()
        detail = action()
        took = time.monotonic() - began
        print(f"ok  {took:5.1f} s  {what}" + (f": {detail}" if detail else ""), flush=True)

    # -- the steps --------------------------------------------------------------------------------

    def build(self) -> str:
        self.run(
            sys.executable, ROOT / "packaging" / "build.py", "--out", self.base / "dist", cwd=ROOT
        )
        return ", ".join(sorted(p.name for p in (self.base / "dist").glob("*.whl")))

    def install(self) -> str:
        self.run(self.base_python, "-m", "venv", self.venv, cwd=self.base)
        self.run(
            self.python, "-m", "pip", "install", "--quiet", "--find-links", self.base / "dist",
            "django-dbops[devdb,binary]", cwd=self.base,
        )  # fmt: skip
        versions = (
            "import django, platform; "
            "print(f'Django {django.get_version()} on Python {platform.python_version()}')"
        )
        return self.run(self.python, "-c", versions, cwd=self.base).stdout.strip()

    def isolated(self) -> str:
        """dbops from the venv's site-packages; nothing of this project importable at all."""
        probe = (
            "import importlib.util, json, dbops, devdb; print(json.dumps({"
            "'dbops': dbops.__file__, 'devdb': devdb.__file__, 'found': [n for n in "
            f"{list(THIS_PROJECT)!r} if importlib.util.find_spec(n)]}}))"
        )
        seen = json.loads(self.run(self.python, "-c", probe, cwd=self.base).stdout)
        if seen["found"]:
            raise SmokeFailure(f"this project's packages are importable: {seen['found']}")
        for name in ("dbops", "devdb"):
            if not Path(seen[name]).is_relative_to(self.venv):
                raise SmokeFailure(f"{name} comes from {seen[name]}, not the venv")
        return f"dbops from {Path(seen['dbops']).parent.relative_to(self.base)}; none of {', '.join(THIS_PROJECT)}"

    def project(self) -> str:
        self.run(self.venv / "bin" / "django-admin", "startproject", "mysite", cwd=self.base)
        self.manage("startapp", "shop")
        settings = self.site / "mysite" / "settings.py"
        settings.write_text(
            settings.read_text() + "\n" + (FILES / "settings_toolkit.py").read_text()
        )
        shutil.copy(FILES / "urls.py", self.site / "mysite" / "urls.py")
        shop = self.site / "shop"
        for name in ("views.py", "urls.py"):
            shutil.copy(FILES / "shop" / name, shop / name)
        shutil.copy(FILES / "shop" / "models_before.py", shop / "models.py")
        self.manage("makemigrations", "shop")
        return "startproject mysite, startapp shop (Item: name, code NULL), makemigrations"

    def check_clean(self) -> str:
        self.manage("check")
        self.manage("check", "--database", "default")
        public = self.shell(
            "import dbops\n"
            "print(len([getattr(dbops, name) for name in dbops.__all__]), dbops.__version__)"
        )
        return (
            "manage.py check and check --database default pass with no DBOPS setting; "
            f"every name of dbops.__all__ imports (count, version: {public})"
        )

    def migrate(self) -> str:
        out = self.manage("migrate", "--no-input").stdout
        self.shell(
            "from shop.models import Item; Item.objects.bulk_create("
            f"Item(name=f'item {{i}}') for i in range({ROWS}))"
        )
        return f"{out.count('OK')} migrations applied; {ROWS} rows with code NULL"

    def backfill(self) -> str:
        args = ("backfill_column", "shop.Item", "code", "--expression", "'SKU-' || id")
        plan = self.manage(*args, "--dry-run").stdout
        if f"Rows to fill now: {ROWS:,}" not in plan:
            raise SmokeFailure(f"dry run: {plan}")
        done = self.manage(*args).stdout.strip().splitlines()[-1]
        left = self.shell(
            "from shop.models import Item; print(Item.objects.filter(code__isnull=True).count())"
        )
        if left != "0":
            raise SmokeFailure(f"{left} rows left NULL after: {done}")
        return done

    def safe_migration(self) -> str:
        shop = self.site / "shop"
        shutil.copy(FILES / "shop" / "0002_safe.py", shop / "migrations" / "0002_safe.py")
        shutil.copy(FILES / "shop" / "models_after.py", shop / "models.py")
        self.manage("migrate", "--no-input")
        # The operations' migration state is the model's: nothing left for makemigrations.
        self.manage("makemigrations", "--check", "--dry-run")
        seen = self.shell(
            "from django.db import connection\n"
            "with connection.cursor() as c:\n"
            "    c.execute(\"SELECT indisvalid FROM pg_index WHERE indexrelid = 'shop_item_name_idx'::regclass\")\n"
            "    valid = c.fetchone()[0]\n"
            "    c.execute(\"SELECT attnotnull FROM pg_attribute WHERE attrelid = 'shop_item'::regclass AND attname = 'code'\")\n"
            "    print(valid, c.fetchone()[0])"
        )  # fmt: skip
        if seen != "True True":
            raise SmokeFailure(f"index valid, code NOT NULL: {seen}")
        return "AddIndexConcurrently (valid index) and SetNotNullPhased (NOT NULL) applied; makemigrations --check clean"

    def unsafe_refused(self) -> str:
        unsafe = self.site / "shop" / "migrations" / "0003_unsafe.py"
        shutil.copy(FILES / "shop" / "0003_unsafe.py", unsafe)
        check = self.manage("check", ok=False)
        migrate = self.manage("migrate", "--no-input", ok=False)
        unsafe.unlink()
        for name, result in (("check", check), ("migrate", migrate)):
            if result.returncode == 0 or "dbops.E101" not in result.stderr:
                raise SmokeFailure(f"{name} did not refuse 0003_unsafe: {result.stderr}")
        applied = self.shell(
            "from django.db.migrations.recorder import MigrationRecorder; "
            "print(MigrationRecorder.Migration.objects.filter(app='shop', name='0003_unsafe').exists())"
        )
        if applied != "False":
            raise SmokeFailure("0003_unsafe was applied")
        self.manage("check")
        return f"check and migrate exit {check.returncode}/{migrate.returncode} naming dbops.E101; nothing applied"

    def doctor(self) -> str:
        result = self.manage("db_doctor", "--json", ok=False)
        findings = json.loads(result.stdout)
        failing = [f["check"] for f in findings if not f["ok"]]
        if result.returncode != 0 or failing:
            raise SmokeFailure(f"db_doctor exit {result.returncode}, needs action: {failing}")
        return f"{len(findings)} findings, none needing action"

    # -- the web ----------------------------------------------------------------------------------

    def serve(self) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # A file, not a pipe nobody reads: runserver logs every request, and once 64 KiB waits
        # in a pipe it blocks in write(2) and stops answering.
        self.server_log = tempfile.TemporaryFile()
        self.server = subprocess.Popen(
            [self.python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=self.site, env=self.env(), stdout=subprocess.DEVNULL, stderr=self.server_log,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, _, body = self.get("/health/live")
                return f"runserver on {self.url}; /health/live {status} {body.strip()!r}"
            except OSError:
                if self.server.poll() is not None:
                    self.server_log.seek(0)
                    log = self.server_log.read().decode(errors="replace")[-3000:]
                    raise SmokeFailure(f"runserver exited: {log}") from None
                time.sleep(0.2)
        raise SmokeFailure("runserver did not answer in 60 s")

    def get(self, path: str, opener=None, data: dict | None = None) -> tuple[int, dict, str]:
        request = urllib.request.Request(
            self.url + path, data=urllib.parse.urlencode(data).encode() if data else None
        )
        try:
            with (opener or urllib.request.build_opener()).open(request, timeout=30) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def health(self) -> str:
        status, _, body = self.get("/health/ready")
        ready = json.loads(body)
        if status != 200 or ready.get("status") != "ok" or ready.get("replica") != "ok":
            raise SmokeFailure(f"/health/ready {status}: {body}")
        status, _, page = self.get("/health/")
        if status != 200 or "<h1>Health: ready</h1>" not in page:
            raise SmokeFailure(f"/health/ {status}: {page[:500]}")
        status, headers, page = self.get("/shop/unavailable/")
        if status != 503 or "The database is unavailable" not in page:
            raise SmokeFailure(f"/shop/unavailable/ {status}: {page[:500]}")
        return f"/health/ready 200 {ready}; /health/ and the 503 page from dbops's own templates"

    def admin_and_metrics(self) -> str:
        """The pages a person and a scraper open, rendered in this project (no humanize, no
        template directory): the backfill run's admin page, its stylesheet, /health/metrics."""
        status, headers, _ = self.get("/health/metrics")
        if status != 401 or "Bearer" not in headers.get("WWW-Authenticate", ""):
            raise SmokeFailure(f"/health/metrics without credentials: {status} {headers}")
        run = self.shell(
            "from django.contrib.auth import get_user_model\n"
            "from dbops.models import BackfillRun\n"
            "get_user_model().objects.create_superuser('smoke', 'smoke@example.com', 'smoke-pw')\n"
            "print(BackfillRun.objects.get(target='shop.Item.code').pk)"
        )
        jar = http.cookiejar.CookieJar()
        person = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        self.get("/admin/login/", person)
        token = next(c.value for c in jar if c.name == "csrftoken")
        login = {"username": "smoke", "password": "smoke-pw", "csrfmiddlewaretoken": token}
        status, _, page = self.get("/admin/login/?next=/admin/", person, login)
        if status != 200 or "Log out" not in page:
            raise SmokeFailure(f"admin login: {status} {page[:500]}")
        status, _, page = self.get(f"/admin/dbops/backfillrun/{run}/change/", person)
        if status != 200 or f">{ROWS:,}</td>" not in page or "backfill-status-done" not in page:
            raise SmokeFailure(f"the run's admin page: {status} {page[:2000]}")
        status, _, css = self.get("/static/dbops/backfill.css", person)
        if status != 200 or ".backfill-run" not in css:
            raise SmokeFailure(f"dbops's stylesheet: {status} {css[:200]}")
        status, _, text = self.get("/health/metrics", person)
        series = (
            "dbops_database_up 1.0",
            "dbops_replica_up 1.0",
            f'dbops_backfill_rows_done{{database="default",run="{run}",target="shop.Item.code"}} '
            f"{ROWS}.0",
        )
        if status != 200 or not all(s in text for s in series):
            ours = "\n".join(line for line in text.splitlines() if line.startswith("dbops_"))
            raise SmokeFailure(f"/health/metrics for staff: {status}, dbops's series:\n{ours}")
        return (
            f"/admin/dbops/backfillrun/{run}/change/ 200 showing {ROWS:,} rows filled, its "
            "stylesheet; /health/metrics 401 without credentials, 200 for staff with the series"
        )

    def router(self) -> str:
        """A stranger's read on the standby. Then, with the standby's replay paused, a write and the
        writer's read of the new row: only the primary has it, so finding it proves read-your-writes
        sent the read there."""
        status, headers, body = self.get("/shop/items/")
        if status != 200 or headers.get("X-DB-Replica-Query-Count") != "1":
            raise SmokeFailure(f"read not on the replica: {status} {headers} {body}")
        replay = (
            "from django.db import connections\n"
            "with connections['replica'].cursor() as c:\n"
            "    c.execute('SELECT pg_wal_replay_{}()')\n"
            "    c.execute('SELECT pg_get_wal_replay_pause_state()')\n"
            "    print(c.fetchone()[0])"
        )
        paused = self.shell(replay.format("pause"))
        try:
            writer = urllib.request.build_opener(
                urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
            )
            status, _, body = self.get("/shop/items/", writer, {"name": "new", "code": "NEW-1"})
            if status != 201:
                raise SmokeFailure(f"write: {status} {body}")
            pk = json.loads(body)["id"]
            status, _, body = self.get(f"/shop/items/{pk}/", writer)
            if status != 200:
                raise SmokeFailure(
                    f"read-your-writes: the writer's read of item {pk}: {status} {body}"
                )
        finally:
            self.shell(replay.format("resume"))
        return (
            f"a stranger's read on the standby; replay {paused}, the writer found its new row "
            "(the primary's)"
        )

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=30)
        if (self.site / "manage.py").exists() and (self.site / ".pgdata").exists():
            self.manage("embedded_db", "stop", ok=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--python",
        default="python3",
        help="the Python of the fresh venv (default python3); pip installs there the newest "
        "Django the wheel allows for it",
    )
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="dbops-smoke-"))
    smoke = Smoke(base, args.python)
    steps = [
        ("build the wheels", smoke.build),
        ("install them in a fresh venv", smoke.install),
        ("nothing of this project in it", smoke.isolated),
        ("a fresh project", smoke.project),
        ("system checks", smoke.check_clean),
        ("migrate (embedded PostgreSQL and its standby started by the devdb extra)", smoke.migrate),
        ("backfill_column on the project's table", smoke.backfill),
        ("a migration with the safe operations", smoke.safe_migration),
        ("the safety check refuses an unsafe migration", smoke.unsafe_refused),
        ("db_doctor", smoke.doctor),
        ("serve", smoke.serve),
        ("health endpoints", smoke.health),
        ("the backfill run's admin page and /health/metrics", smoke.admin_and_metrics),
        ("replica router against the standby", smoke.router),
    ]
    print(f"toolkit smoke in {base}", flush=True)
    try:
        for what, action in steps:
            smoke.step(what, action)
    except (SmokeFailure, subprocess.TimeoutExpired) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        smoke.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"toolkit smoke passed in {time.monotonic() - smoke.started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
