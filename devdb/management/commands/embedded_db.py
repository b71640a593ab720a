import os

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

    def handle(self, *args, action, **options):
        pgdata = settings.BASE_DIR / ".pgdata"
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
            elif action == "start":
                running = embedded.start(pgdata)
                self.stdout.write(self.style.SUCCESS(f"running: {running.url()}"))
            elif action == "stop":
                stopped = embedded.stop(pgdata)
                self.stdout.write(self.style.SUCCESS("stopped") if stopped else "was not running")
            else:
                running = embedded.start(pgdata)
                command = embedded.psql_command(running)
                os.execv(command[0], command)
        except embedded.EmbeddedPostgresError as exc:
            raise CommandError(str(exc)) from exc
