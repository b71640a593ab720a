from django.core.management.base import BaseCommand, CommandError

from accounts.demo import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    PEOPLE_PASSWORD,
    accounts_seed,
    demo_user_ensure,
)


def positive(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Load the demo data set (people, accounts with a transfer history, customers, products, "
        "orders) and create the demo staff login. Idempotent: running it again adds only what is missing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--accounts", type=positive, default=40, help="money accounts in all (default 40)"
        )

    def handle(self, *args, **options):
        try:
            demo_user_ensure()
            added = accounts_seed(accounts=options["accounts"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if options["verbosity"]:
            self.stdout.write(f"accounts: {added} added ({options['accounts']} wanted)")
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}  (staff; people person0001.. use {PEOPLE_PASSWORD})"
                )
            )
