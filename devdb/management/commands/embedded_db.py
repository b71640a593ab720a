import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devdb import embedded


class Command(BaseCommand):
    help = (
        "Show, start, stop or open psql on the embedded PostgreSQL under .pgdata/ "
        "(the server used when DATABASE_URL is unset)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "action",
            choices=["status", "start", "stop", "psql"],
            help="status: is it running, where; start: start it; stop: stop it (fast shutdown); "
            "psql: open psql on the project's database.",
        )
        parser.add_argument(
            "--replica",
            action="store_true",
            help="start: also start a hot standby of it (pg_basebackup, streaming replication) "
            "in .pgdata-replica/; psql: open psql on the standby",
        )

    def handle(self, *args, action, replica=False, **options):
        # EMBEDDED_PGDATA: where the project keeps the server's data (default BASE_DIR/.pgdata).
        pgdata = Path(getattr(settings, "EMBEDDED_PGDATA", None) or settings.BASE_DIR / ".pgdata")
        if os.environ.get("DATABASE_URL"):
            self.stderr.write(
                self.style.WARNING(
                    "DATABASE_URL is set: the project uses that server, not this one."
                )
            )
        try:
            if action == "status":
                running = embedded.status(pgdata)
                if running is None:
                    self.stdout.write(f"stopped ({pgdata})")
                    return
                self.stdout.write(
                    f"running: pid {running.pid}, data {running.pgdata}, socket {running.socket_dir}, "
                    f"binaries {embedded.bin_dir()}\nurl: {running.url()}"
                )
                standby = embedded.status(embedded.replica_pgdata(pgdata))
                if standby is not None:
                    self.stdout.write(
                        f"replica: pid {standby.pid}, data {standby.pgdata}\n"
                        f"replica url: {standby.url()}"
                    )
            elif action == "start":
                running = embedded.start(pgdata)
                self.stdout.write(self.style.SUCCESS(f"running: {running.url()}"))
                if replica:
                    standby = embedded.replica_start(running)
                    self.stdout.write(self.style.SUCCESS(f"replica running: {standby.url()}"))
            elif action == "stop":
                # The standby first: stopped after its primary, it would retry streaming forever.
                embedded.replica_stop(pgdata)
                stopped = embedded.stop(pgdata)
                self.stdout.write(self.style.SUCCESS("stopped") if stopped else "was not running")
            else:
                running = embedded.start(pgdata)
                if replica:
                    running = embedded.replica_start(running)
                command = embedded.psql_command(running)
                os.execv(command[0], command)
        except embedded.EmbeddedPostgresError as exc:
            raise CommandError(str(exc)) from exc
