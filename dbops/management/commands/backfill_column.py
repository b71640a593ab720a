import sys
import time

from django.core.management.base import BaseCommand, CommandError

from dbops.backfill import BackfillError, Progress, backfill, plan_build, plan_check, rows_to_fill


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


class Command(BaseCommand):
    help = (
        "Fill a column in keyset batches on the primary key, one short transaction per batch. "
        "Resumable: a run that is killed or fails continues from its checkpoint when the same "
        "command runs again. Example: backfill_column orders.Customer email_normalized "
        '--expression "lower(btrim(email))"'
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "model",
            metavar="app_label.Model",
            help="the model whose table to fill, e.g. orders.Customer",
        )
        parser.add_argument("field", help="the field (column) to fill")
        source = parser.add_argument_group("what to write (exactly one)")
        source.add_argument("--value", help="a literal, converted and validated by the field")
        source.add_argument(
            "--from-field",
            dest="from_field",
            metavar="FIELD",
            help="copy another column of the same row",
        )
        source.add_argument(
            "--expression",
            metavar="SQL",
            help='an SQL expression over the row, e.g. "lower(btrim(email))"',
        )
        parser.add_argument(
            "--where", metavar="SQL", help="which rows to fill (default: the field IS NULL)"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=1000,
            help="rows per batch to start with (default 1000)",
        )
        parser.add_argument(
            "--target-batch-ms",
            type=float,
            default=200,
            help="batch size adapts toward this duration (default 200)",
        )
        parser.add_argument(
            "--sleep", type=float, default=0.0, metavar="SECONDS", help="pause between batches"
        )
        parser.add_argument(
            "--lock-timeout-ms", type=int, default=2000, help="per batch (default 2000)"
        )
        parser.add_argument(
            "--statement-timeout-ms", type=int, default=30000, help="per batch (default 30000)"
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print the plan, the SQL and the rows to fill; write nothing",
        )
        parser.add_argument(
            "--restart",
            action="store_true",
            help="abandon an unfinished run of this target and start over",
        )
        parser.add_argument(
            "--database", default="default", help="database alias (default: default)"
        )

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        try:
            plan = plan_build(
                model_label=options["model"],
                field_name=options["field"],
                value=options["value"],
                from_field=options["from_field"],
                expression=options["expression"],
                where=options["where"],
                database=options["database"],
                batch_size=options["batch_size"],
                target_batch_ms=options["target_batch_ms"],
                sleep=options["sleep"],
                lock_timeout_ms=options["lock_timeout_ms"],
                statement_timeout_ms=options["statement_timeout_ms"],
            )
            if options["dry_run"]:
                plan_check(plan)
                self.dry_run(plan)
                return
            self.tty = sys.stdout.isatty() and self.verbosity > 0
            self.last_line = 0.0
            run = backfill(plan, restart=options["restart"], progress=self.progress)
        except BackfillError as exc:
            raise CommandError(str(exc)) from exc
        if self.tty:
            self.stdout.write("")
        if self.verbosity:
            elapsed = (run.finished_at - run.started_at).total_seconds()
            self.stdout.write(
                self.style.SUCCESS(
                    f"Done: {plan.target}: {run.rows_done:,} rows in {run.batches:,} batches, "
                    f"{_duration(elapsed)} since run #{run.pk} began; longest batch {run.longest_batch_ms:.0f} ms, "
                    f"{run.retries} retries, {run.splits} splits."
                )
            )

    def dry_run(self, plan):
        self.stdout.write(f"Target:   {plan.target} (table {plan.table}, column {plan.column})")
        self.stdout.write(
            f"Source:   {next(iter(plan.source))} = {next(iter(plan.source.values()))}"
        )
        self.stdout.write(f"Rows:     {plan.where}")
        self.stdout.write(
            f"Batches:  keyset on {plan.pk_column}, starting at {plan.batch_size} rows, toward {plan.target_batch_ms:g} ms each"
        )
        self.stdout.write(
            f"Per batch: lock_timeout {plan.lock_timeout_ms} ms, statement_timeout {plan.statement_timeout_ms} ms"
        )
        self.stdout.write(f"SQL (one statement, one transaction per batch):\n{plan.update_sql()}")
        if plan.params:
            self.stdout.write(f"Parameters: {plan.params}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Rows to fill now: {rows_to_fill(plan):,}. Dry run: nothing was written."
            )
        )

    def progress(self, p: Progress):
        if not self.verbosity:
            return
        run = p.run
        if self.tty:
            width = 30
            filled = int(width * p.fraction)
            bar = "#" * filled + "." * (width - filled)
            self.stdout.write(
                f"\r[{bar}] {p.fraction:5.1%}  {run.rows_done:,} rows  {p.rate:,.0f} rows/s  ETA {_duration(p.eta_s)}  ",
                ending="",
            )
            self.stdout.flush()
            return
        now = time.monotonic()
        if now - self.last_line >= 2 or p.fraction >= 1:
            self.last_line = now
            self.stdout.write(
                f"{run.target}: {run.rows_done:,} rows, up to id {run.last_pk} ({p.fraction:.0%}), "
                f"{p.rate:,.0f} rows/s, ETA {_duration(p.eta_s)}, batch {run.batch_size}"
            )
