import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from orders.exceptions import ImportFileError, ImportStopped
from orders.imports import (
    BATCH_SIZE,
    COPY_BATCH_SIZE,
    MAX_BATCH_SIZE,
    ImportProgress,
    ImportReport,
    products_import,
)

# Exit codes (the command's interface): every row written; rows rejected (or the import stopped
# part-way); the file cannot be read, or bad arguments.
OK, REJECTED, UNREADABLE = 0, 1, 2


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


class Command(BaseCommand):
    help = (
        "Import products from a UTF-8 CSV file with the header sku,name,price,stock (in any "
        "order; optionally description): new SKUs are inserted, changed ones updated (their "
        "version advances), unchanged ones left alone, so running the same file twice changes "
        "nothing. Every line is checked before anything is written; bad lines are reported with "
        "their line numbers and skipped, the others written in batches of one short transaction "
        "each. Exit status: 0 every row written, 1 rows rejected (or the import stopped part-way: "
        "run it again), 2 the file cannot be read or bad arguments. "
        "Example: import_products catalogue.csv --dry-run"
    )

    def add_arguments(self, parser):
        parser.add_argument("file", metavar="FILE.csv", help="the CSV file to import (UTF-8)")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help=f"rows per batch, each one transaction (default {BATCH_SIZE:,}, or "
            f"{COPY_BATCH_SIZE:,} with --copy; from 1 to {MAX_BATCH_SIZE:,})",
        )
        parser.add_argument(
            "--copy",
            action="store_true",
            help="send each batch with COPY into a temporary table, then one INSERT ... SELECT: "
            "faster for the largest files; works behind PgBouncer in transaction mode",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="check the file and print how many rows would be inserted, updated or left "
            "unchanged, and every rejected line; write nothing",
        )
        parser.add_argument(
            "--database", default="default", help="database alias (default: default)"
        )

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        self.tty = self.verbosity > 0 and self.stdout.isatty()
        self.last_line = 0.0
        size = options["batch_size"]
        if size is not None and not 1 <= size <= MAX_BATCH_SIZE:
            raise CommandError(
                f"--batch-size must be from 1 to {MAX_BATCH_SIZE:,}.", returncode=UNREADABLE
            )
        if options["database"] not in connections:
            raise CommandError(
                f"--database {options['database']!r} is not a database alias of these settings "
                f"(they have: {', '.join(connections)}).",
                returncode=UNREADABLE,
            )
        path = options["file"]
        try:
            with open(path, "rb") as file:
                report = products_import(
                    file=file,
                    batch_size=size,
                    copy=options["copy"],
                    dry_run=options["dry_run"],
                    using=options["database"],
                    progress=self.progress,
                )
        except OSError as exc:
            raise CommandError(
                f"Cannot read {path}: {exc.strerror or exc}.", returncode=UNREADABLE
            ) from None
        except ImportFileError as exc:
            raise CommandError(f"{path}: {exc}", returncode=UNREADABLE) from None
        except ImportStopped as exc:
            self.end_progress()
            raise CommandError(f"{path}: {exc}", returncode=REJECTED) from None
        except KeyboardInterrupt:
            self.end_progress()
            raise CommandError(
                "Interrupted. Whole batches are committed and the one under way was rolled back: "
                "run the same command again to finish (rows already written are left alone).",
                returncode=130,
            ) from None
        self.end_progress()
        self.report(path, report)

    def report(self, path: str, report: ImportReport) -> None:
        for reject in report.rejects:
            self.stderr.write(f"{path}: {reject}")
        if self.verbosity:
            style = self.style.WARNING if report.rejects else self.style.SUCCESS
            dry = " Dry run: nothing was written." if report.dry_run else ""
            self.stdout.write(style(f"{path}: {report.summary()}{dry}"))
        if report.rejects:
            what = "would be skipped" if report.dry_run else "were not imported"
            raise CommandError(
                f"{len(report.rejects):,} rejected lines {what} (listed above with their line "
                "numbers); fix them and import the same file again.",
                returncode=REJECTED,
            )

    def progress(self, p: ImportProgress) -> None:
        if not self.verbosity:
            return
        if self.tty:
            width = 30
            filled = int(width * p.fraction)
            self.stdout.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {p.fraction:5.1%}  {p.done:,} of "
                f"{p.total:,} rows  {p.rate:,.0f} rows/s  ETA {_duration(p.eta_s)}  ",
                ending="",
            )
            self.stdout.flush()
            return
        now = time.monotonic()
        if now - self.last_line >= 2 or p.done == p.total:
            self.last_line = now
            self.stdout.write(
                f"{p.done:,} of {p.total:,} rows ({p.fraction:.0%}), {p.rate:,.0f} rows/s, "
                f"ETA {_duration(p.eta_s)}"
            )

    def end_progress(self) -> None:
        if self.tty:
            self.stdout.write("")
