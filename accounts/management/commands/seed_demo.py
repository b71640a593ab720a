import sys

from django.core.management.base import BaseCommand, CommandError

from accounts.demo import (
    DEMO_PASSWORD,
    DEMO_USERNAME,
    PEOPLE_PASSWORD,
    accounts_seed,
    demo_user_ensure,
)
from orders.demo import customers_seed, orders_seed, products_seed


def count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = (
        "Load the demo data set (people, accounts with a transfer history, customers, products, "
        "orders) and create the demo staff login. Idempotent: running it again adds only what is "
        "missing, so larger numbers grow an existing data set."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--accounts", type=count, default=40, help="money accounts in all (default 40)"
        )
        parser.add_argument(
            "--customers", type=count, default=200, help="customers in all (default 200)"
        )
        parser.add_argument(
            "--products", type=count, default=60, help="products in all (default 60)"
        )
        parser.add_argument(
            "--orders",
            type=count,
            default=500,
            help="orders in all (default 500; 1000000 takes minutes)",
        )

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        try:
            demo = demo_user_ensure()
            self.report("accounts", accounts_seed(accounts=options["accounts"]))
            self.report("products", products_seed(options["products"]))
            self.report("customers", customers_seed(options["customers"], demo_user=demo))
            self.report("orders", orders_seed(options["orders"], progress=self.progress))
        except ValueError as exc:
            raise CommandError(f"Cannot seed: {exc}") from exc
        if self.verbosity:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}  (staff; people person0001.. use {PEOPLE_PASSWORD})"
                )
            )

    def report(self, what: str, added: int) -> None:
        if self.verbosity:
            self.stdout.write(f"{what}: {added} added")

    def progress(self, done: int, total: int) -> None:
        if not self.verbosity or total < 50_000:
            return
        if sys.stdout.isatty():
            self.stdout.write(
                f"\r  orders {done:,}/{total:,} ({done / total:.0%})",
                ending="\n" if done == total else "",
            )
            self.stdout.flush()
        elif done == total or done * 10 // total != (done - 5000) * 10 // total:
            self.stdout.write(f"  orders {done:,}/{total:,} ({done / total:.0%})")
