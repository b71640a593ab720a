import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from core.demo import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    PEOPLE_PASSWORD,
    demo_reset,
    demo_seeders,
    demo_user_ensure,
)


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Load the demo data set (people, accounts with a transfer history, customers, products, "
        "orders) and create the demo staff login. Idempotent: running it again adds only what is "
        "missing, so larger numbers grow an existing data set. --reset starts from fresh data."
    )

    def add_arguments(self, parser):
        for seeder in demo_seeders():
            parser.add_argument(
                f"--{seeder.name}", type=count, default=seeder.default, help=seeder.help
            )
        parser.add_argument(
            "--reset",
            action="store_true",
            help="first delete every row of the apps with demo data (accounts, transfers, "
            "customers, products, orders, and the person0001.. logins), then load them afresh; "
            "asks first unless --no-input",
        )
        parser.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="do not ask before --reset deletes",
        )

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        if options["reset"]:
            self.reset(interactive=options["interactive"])
        try:
            demo_user_ensure()
            for seeder in demo_seeders():
                added = seeder.seed(options[seeder.name], self.progress_for(seeder.name))
                if self.verbosity:
                    self.stdout.write(f"{seeder.name}: {added} added")
        except ValueError as exc:
            raise CommandError(f"Cannot seed: {exc}") from exc
        if self.verbosity:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}  (staff; people person0001.. use {PEOPLE_PASSWORD})"
                )
            )

    def reset(self, *, interactive: bool) -> None:
        name = connections[DEFAULT_DB_ALIAS].settings_dict["NAME"]
        if interactive:
            answer = input(
                f"This deletes every account, transfer, customer, product and order in database "
                f"{name!r}, and the person0001.. logins. Type 'yes' to go on: "
            )
            if answer != "yes":
                raise CommandError("Reset cancelled: nothing was deleted.")
        tables = demo_reset()
        if self.verbosity:
            self.stdout.write(f"Emptied {len(tables)} tables: {', '.join(tables)}")

    def progress_for(self, what: str):
        def progress(done: int, total: int) -> None:
            if not self.verbosity or total < 50_000:
                return
            if sys.stdout.isatty():
                self.stdout.write(
                    f"\r  {what} {done:,}/{total:,} ({done / total:.0%})",
                    ending="\n" if done == total else "",
                )
                self.stdout.flush()
            elif done == total or done * 10 // total != (done - 5000) * 10 // total:
                self.stdout.write(f"  {what} {done:,}/{total:,} ({done / total:.0%})")

        return progress
