import argparse
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from dbops import routing
from dbops.backfill import (
    BackfillCancelled,
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


def pauses_text(pauses: dict) -> str:
    """'replica lag 2x 3.1 s, vacuum 1x 0.4 s', or '' when the run never paused."""
    return ", ".join(
        f"{name.replace('_', ' ')} {entry.get('count', 0)}x {entry.get('seconds', 0):.1f} s"
        for name, entry in sorted(pauses.items())
    )


def _health_options(options: dict) -> dict:
    """The throttle's flags; None leaves the DBOPS setting in charge."""
    for name in ("max_replica_lag_ms", "max_lock_wait_ms", "max_wal_mb_per_s"):
        value = options.get(name)
        if value is not None and value < 0:
            raise CommandError(f"--{name.replace('_', '-')} must be at least 0.")
    wal = options.get("max_wal_mb_per_s")
    return {
        "max_replica_lag_ms": options.get("max_replica_lag_ms"),
        "max_lock_wait_ms": options.get("max_lock_wait_ms"),
        "pause_on_vacuum": options.get("vacuum_pause"),
        "max_wal_bytes_per_s": None if wal is None else wal * 2**20,
    }


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
    commit = options.get("synchronous_commit")
    return BackfillOptions(
        **_health_options(options),
        synchronous_commit=DEFAULTS.synchronous_commit if commit is None else commit == "on",
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
        "Fill a column in keyset batches on the primary key (any key: integer, UUID, "
        "composite), one short transaction per batch. Resumable: a run that is killed or fails "
        "continues from its checkpoint when the same command runs again. Steered from the admin "
        "(/admin/dbops/backfillrun/): a paused run waits here until resumed (also when this "
        "command starts on it); a cancelled run stops after its batch in flight (exit 3) and "
        "needs --restart to start over. Pauses between batches while the database is unhealthy "
        "(replica lag, sessions waiting on its locks, a VACUUM on the table, WAL rate). "
        'Example: backfill_column shop.Customer email_normalized --expression "lower(btrim(email))"'
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
            "--synchronous-commit",
            choices=["on", "off"],
            default=None,
            help="whether each batch's commit waits for its WAL to reach the disk (default "
            f"{'on' if DEFAULTS.synchronous_commit else 'off'}); off is safe here: a batch commits "
            "with its checkpoint, so a crash that loses one loses both and the run redoes it",
        )
        self.add_health_arguments(parser)
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

    def add_health_arguments(self, parser):
        """Throttling on the database's health: each pause reported with its reason."""
        health = parser.add_argument_group(
            "pause between batches while the database is unhealthy (defaults: the DBOPS settings)"
        )
        health.add_argument(
            "--max-replica-lag-ms",
            type=float,
            default=None,
            help="while the read replica lags more than this, in milliseconds (default: "
            "DBOPS['REPLICA_MAX_LAG_MS'], the router's ceiling; no replica configured: no pauses)",
        )
        health.add_argument(
            "--max-lock-wait-ms",
            type=float,
            default=None,
            help="when a session waited longer than this behind a batch's row locks, in "
            "milliseconds: pause and halve the batch (default: "
            "DBOPS['BACKFILL_MAX_LOCK_WAIT_MS']; 0: never)",
        )
        health.add_argument(
            "--vacuum-pause",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="while autovacuum (or any VACUUM) works on the table (default: "
            "DBOPS['BACKFILL_PAUSE_ON_VACUUM'])",
        )
        health.add_argument(
            "--max-wal-mb-per-s",
            type=float,
            default=None,
            help="while the server writes WAL faster than this, in MiB per second over the "
            "last second (default: DBOPS['BACKFILL_MAX_WAL_BYTES_PER_S']; 0: never)",
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
            run = backfill(plan, progress=self.progress, notify=self.notify)
        except BackfillCancelled as exc:
            raise CommandError(str(exc), returncode=3) from exc
        except BackfillError as exc:
            self.end_progress_line()
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            # Ctrl-C: each finished batch committed with its checkpoint; the one under way
            # rolled back with its transaction. A message, not a traceback.
            self.end_progress_line()
            raise CommandError(
                "Interrupted. Every finished batch is committed with its checkpoint and the one "
                "under way was rolled back: run the same command again to resume (a run that a "
                "person paused stays paused until someone resumes it).",
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
                    f"{run.retries} retries, {run.splits} splits; "
                    + (f"paused for {pauses_text(run.pauses)}." if run.pauses else "no pauses.")
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
            where = _after_key(unfinished.last_key)
            self.stdout.write(f"Resuming run #{unfinished.pk} {where}, {done}.")

    def dry_run(self, plan):
        self.stdout.write(f"Target:   {plan.target} (table {plan.table}, column {plan.column})")
        self.stdout.write(
            f"Source:   {next(iter(plan.source))} = {next(iter(plan.source.values()))}"
        )
        self.stdout.write(f"Rows:     {plan.where}")
        self.stdout.write(
            f"Batches:  keyset on ({plan.key_label}), starting at {plan.batch_size} rows, toward {plan.options.target_batch_ms:g} ms each"
        )
        self.stdout.write(
            f"Per batch: lock_timeout {plan.options.lock_timeout_ms} ms, statement_timeout {plan.options.statement_timeout_ms} ms"
        )
        self.dry_run_health(plan)
        self.stdout.write(
            f"SQL (one statement, one transaction per batch):\n{plan.update_sql(first=False)}"
        )
        if plan.params:
            self.stdout.write(f"Parameters: {plan.params}")
        self.stdout.write(
            self.style.SUCCESS(
                f"Rows to fill now: {rows_to_fill(plan):,}. Dry run: nothing was written."
            )
        )

    def dry_run_health(self, plan):
        limits = throttle.limits(plan)
        self.stdout.write(
            f"Per batch: synchronous_commit {'on' if plan.options.synchronous_commit else 'off'}"
        )
        self.stdout.write(
            "Between batches, pause while: the replica lags over "
            f"{limits.replica_lag_ms:g} ms"
            + ("" if routing.replica_configured() else " (no replica configured)")
            + (
                f"; a session waited over {limits.lock_wait_ms:g} ms behind a batch's locks"
                if limits.lock_wait_ms
                else ""
            )
            + ("; a VACUUM works on the table" if limits.vacuum else "")
            + (
                f"; WAL is written faster than {limits.wal_bytes_per_s / 2**20:g} MiB/s"
                if limits.wal_bytes_per_s
                else ""
            )
        )

    def notify(self, line: str):
        if self.verbosity:
            self.stdout.write(("\n" if self.tty else "") + line)

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
                f"{run.target}: {run.rows_done:,} rows, up to key ({', '.join(run.last_key)}) "
                f"({p.fraction:.0%}), {p.rate:,.0f} rows/s, ETA {_duration(p.eta_s)}, "
                f"batch {run.batch_size}"
                + (f", paused for {pauses_text(run.pauses)}" if run.pauses else "")
            )


def _after_key(last_key: list[str] | None) -> str:
    """Where a resumed run starts: 'after id 1,234', 'after key (7, 2026-01)', 'from the start'."""
    if not last_key:
        return "from the start"
    if len(last_key) == 1 and last_key[0].isascii() and last_key[0].isdigit():
        return f"after id {int(last_key[0]):,}"
    return f"after key ({', '.join(last_key)})"
