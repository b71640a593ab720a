import sys
import time

from django.core.management.base import BaseCommand, CommandError

from dbops import routing
from dbops.backfill import (
    BackfillError,
    BackfillOptions,
    Expression,
    FromField,
    Progress,
    Value,
    backfill,
    plan_build,
    plan_check,
    rows_to_fill,
    throttle,
)
from dbops.models import BackfillRun, BackfillStatus

DEFAULTS = BackfillOptions
# Numeric flags: their least value (checked here, where the flag names belong) and help text.
# Their defaults are BackfillOptions' own.
NUMERIC = {
    "batch_size": (1, "rows in the first batch; later batches adapt toward --target-batch-ms"),
    "target_batch_ms": (1, "how long one batch should take, in milliseconds"),
    "sleep": (0, "seconds to pause between batches"),
    "lock_timeout_ms": (1, "lock timeout of each batch, in milliseconds"),
    "statement_timeout_ms": (1, "statement timeout of each batch, in milliseconds"),
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def options_parse(options: dict) -> BackfillOptions:
    """The command's flags as the library's typed options; CommandError names a bad flag."""
    sources = [
        (name, kind(options[name]))
        for name, kind in (("value", Value), ("from_field", FromField), ("expression", Expression))
        if options[name] is not None
    ]
    if len(sources) != 1:
        raise CommandError(
            "Give exactly one of --value, --from-field or --expression"
            + (f" (got {', '.join(name for name, _ in sources)})." if sources else ".")
        )
    for name, least in ((n, least) for n, (least, _) in NUMERIC.items()):
        if options[name] < least:
            raise CommandError(f"--{name.replace('_', '-')} must be at least {least}.")
    lag = options.get("max_replica_lag_ms")
    if lag is not None and lag < 0:
        raise CommandError("--max-replica-lag-ms must be at least 0.")
    return BackfillOptions(
        max_replica_lag_ms=lag,
        model_label=options["model"],
        field_name=options["field"],
        source=sources[0][1],
        where=options["where"],
        database=options["database"],
        restart=options["restart"],
        **{name: options[name] for name in NUMERIC},
    )


class Command(BaseCommand):
    help = (
        "Fill a column in keyset batches on the primary key, one short transaction per batch. "
        "Resumable: a run that is killed or fails continues from its checkpoint when the same "
        "command runs again. Example: backfill_column shop.Customer email_normalized "
        '--expression "lower(btrim(email))"'
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "model",
            metavar="app_label.Model",
            help="the model whose table to fill, e.g. shop.Customer",
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
        self.add_batch_arguments(parser)

    def add_batch_arguments(self, parser):
        """How the rows are written: batch size and pace, timeouts, and run control."""
        for name, (least, text) in NUMERIC.items():
            default = getattr(DEFAULTS, name)
            parser.add_argument(
                f"--{name.replace('_', '-')}",
                type=type(default),
                default=default,
                help=f"{text} (default {default:g}; at least {least})",
            )
        parser.add_argument(
            "--max-replica-lag-ms",
            type=float,
            default=None,
            help="pause between batches while the read replica lags more than this, in "
            "milliseconds (default: DBOPS['REPLICA_MAX_LAG_MS'], the router's ceiling; no replica "
            "configured: no pauses)",
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
            "--database",
            default=DEFAULTS.database,
            help=f"database alias (default: {DEFAULTS.database})",
        )

    def handle(self, *args, **options):
        self.verbosity = options["verbosity"]
        try:
            plan = plan_build(options_parse(options))
            if options["dry_run"]:
                plan_check(plan)
                self.dry_run(plan)
                return
            self.tty = sys.stdout.isatty() and self.verbosity > 0
            self.last_line = 0.0
            self.resuming(plan)
            run = backfill(plan, progress=self.progress)
        except BackfillError as exc:
            self.end_progress_line()
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            # Ctrl-C: each finished batch committed with its checkpoint; the one under way
            # rolled back with its transaction. A message, not a traceback.
            self.end_progress_line()
            raise CommandError(
                "Interrupted. Every finished batch is committed with its checkpoint and the one "
                "under way was rolled back: run the same command again to resume.",
                returncode=130,
            ) from None
        if self.tty:
            self.stdout.write("")
        if self.verbosity:
            elapsed = (run.finished_at - run.started_at).total_seconds()
            self.stdout.write(
                self.style.SUCCESS(
                    f"Done: {plan.target}: {run.rows_done:,} rows in {run.batches:,} batches, "
                    f"{_duration(elapsed)} since run #{run.pk} began; longest batch {run.longest_batch_ms:.0f} ms, "
                    f"{run.retries} retries, {run.splits} splits, {run.replica_pauses} pauses "
                    f"({run.replica_paused_s:.1f} s) for replica lag."
                )
            )

    def end_progress_line(self) -> None:
        """The progress bar rewrites one line (``\\r``) with no newline: end it before a message,
        or the message is printed on the bar's line."""
        if getattr(self, "tty", False):
            self.stdout.write("")

    def resuming(self, plan) -> None:
        """Say where this run starts: a resumed run used to start silently at 10%."""
        unfinished = (
            BackfillRun.objects.using(plan.database)
            .filter(
                target=plan.target,
                database=plan.database,
                status__in=[BackfillStatus.RUNNING, BackfillStatus.FAILED],
            )
            .order_by("-pk")
            .first()
        )
        if unfinished is None or not self.verbosity:
            return
        done = f"{unfinished.rows_done:,} rows done already"
        if plan.options.restart:
            self.stdout.write(f"Abandoning run #{unfinished.pk} ({done}); starting over.")
        elif unfinished.options == plan.recorded_options:
            where = (
                "from the start"
                if unfinished.last_pk is None
                else f"after id {unfinished.last_pk:,}"
            )
            self.stdout.write(f"Resuming run #{unfinished.pk} {where}, {done}.")

    def dry_run(self, plan):
        self.stdout.write(f"Target:   {plan.target} (table {plan.table}, column {plan.column})")
        self.stdout.write(
            f"Source:   {next(iter(plan.source))} = {next(iter(plan.source.values()))}"
        )
        self.stdout.write(f"Rows:     {plan.where}")
        self.stdout.write(
            f"Batches:  keyset on {plan.pk_column}, starting at {plan.batch_size} rows, toward {plan.options.target_batch_ms:g} ms each"
        )
        self.stdout.write(
            f"Per batch: lock_timeout {plan.options.lock_timeout_ms} ms, statement_timeout {plan.options.statement_timeout_ms} ms"
        )
        self.stdout.write(
            f"Between batches: pause while the replica lags over {throttle.threshold_ms(plan):g} ms"
            + ("" if routing.replica_configured() else " (no replica configured)")
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
                + (
                    f", {run.replica_pauses} pauses ({run.replica_paused_s:.1f} s) for replica lag"
                    if run.replica_pauses
                    else ""
                )
            )
