from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connections

from dbops.partitioning import PartitioningError, catalog, maintain

POLICY = (
    "Keeps the time-partitioned tables of DBOPS['PARTITIONED_TABLES'] ready. For each: creates "
    "partitions for the current interval and AHEAD intervals past it (there is no DEFAULT "
    "partition, so an INSERT whose partition is missing would fail: run this daily from cron; "
    "migrate also creates missing ones); each new partition is a plain table attached with ATTACH "
    "PARTITION, which blocks neither reads nor writes. With RETENTION set, partitions whose range "
    "ended more than RETENTION intervals before the current one are detached with DETACH "
    "PARTITION ... CONCURRENTLY and left as plain tables for archiving: nothing is dropped. An "
    "interrupted detach is finished (FINALIZE). Lock waits are bounded by "
    "DBOPS['PARTITIONS_LOCK_TIMEOUT_MS'] and retried."
)


def _policy_lines() -> str:
    try:
        lines = [p.describe() for p in maintain.policies()]
    except PartitioningError as exc:
        return f" Settings error: {exc}"
    return " Registered now: " + ("; ".join(lines) if lines else "none") + "."


class Command(BaseCommand):
    @property
    def help(self):
        return POLICY + _policy_lines()

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would be created, detached or finished; change nothing",
        )
        parser.add_argument(
            "--table",
            action="append",
            metavar="TABLE",
            help="only this registered table (repeat for more; default: every registered table)",
        )
        parser.add_argument(
            "--database", default="default", help="database alias (default: default)"
        )

    def handle(self, *args, dry_run=False, table=None, database="default", **options):
        self.verbosity = options["verbosity"]
        if database not in connections:
            raise CommandError(f"Unknown database alias {database!r}.")
        try:
            policies = self._chosen(maintain.policies(), table)
            connection = connections[database]
            for policy in policies:
                self._maintain(connection, policy, dry_run)
        except PartitioningError as exc:
            raise CommandError(str(exc)) from exc
        except DatabaseError as exc:
            raise CommandError(f"The database refused: {str(exc).strip()}") from exc

    def _chosen(self, policies, tables):
        if not tables:
            if not policies:
                raise CommandError(
                    "No table is registered in DBOPS['PARTITIONED_TABLES']: nothing to maintain."
                )
            return policies
        known = {p.table: p for p in policies}
        unknown = [t for t in tables if t not in known]
        if unknown:
            raise CommandError(
                f"Not registered in DBOPS['PARTITIONED_TABLES']: {', '.join(unknown)} "
                f"(registered: {', '.join(known) or 'none'})."
            )
        return [known[t] for t in tables]

    def _maintain(self, connection, policy, dry_run):
        actions = maintain.plan(connection, policy)
        if self.verbosity:
            partitioned = catalog.relkind(connection, policy.table) == "p"
            self.stdout.write(
                f"{policy.describe()}: {len(actions) or 'nothing'} to do"
                + ("" if partitioned else " (it is not a partitioned table, yet)")
            )
        for action in actions:
            if dry_run:
                self.stdout.write(f"  would {action.describe()}")
                continue
            maintain.apply(connection, action)
            if self.verbosity:
                self.stdout.write(self.style.SUCCESS(f"  done: {action.describe()}"))
        if dry_run and self.verbosity:
            self.stdout.write("Dry run: nothing was changed.")
