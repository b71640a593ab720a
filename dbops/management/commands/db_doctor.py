import json

from django.core.management.base import BaseCommand, CommandError

from dbops.doctor import examine


class Command(BaseCommand):
    help = (
        "Examine the database: pending migrations, INVALID indexes, NOT VALID constraints, long and "
        "idle-in-transaction sessions, blocked locks, tables or columns the models need and the "
        "database lacks, sequences near their limit, transaction ID age, index bloat (with the "
        "REINDEX CONCURRENTLY to run), pool sizing, the cache server. Thresholds: the DBOPS "
        "settings. Exits 1 when something needs action."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--database", default="default", help="database alias (default: default)"
        )
        parser.add_argument("--json", action="store_true", help="print the findings as JSON")
        parser.add_argument(
            "--long-transaction-seconds",
            type=float,
            default=60,
            help="report transactions open longer (default 60)",
        )
        parser.add_argument(
            "--idle-seconds",
            type=float,
            default=30,
            help="report sessions idle in a transaction longer (default 30)",
        )

    def handle(self, *args, **options):
        findings = examine(
            alias=options["database"],
            long_transaction_s=options["long_transaction_seconds"],
            idle_s=options["idle_seconds"],
        )
        if options["json"]:
            self.stdout.write(json.dumps([f.__dict__ for f in findings], indent=2, default=str))
        else:
            for f in findings:
                mark = self.style.SUCCESS("ok  ") if f.ok else self.style.ERROR("FIX ")
                self.stdout.write(f"{mark} {f.check}: {f.summary}")
                for detail in f.details:
                    self.stdout.write("       " + ", ".join(f"{k}={v}" for k, v in detail.items()))
                if not f.ok and f.action:
                    self.stdout.write(f"       -> {f.action}")
        problems = [f.check for f in findings if not f.ok]
        if problems:
            raise CommandError(
                f"{len(problems)} finding(s) need action: {', '.join(problems)}.", returncode=1
            )
