"""``manage.py migrate``, Django's own, with the database toolkit's guarantees around it.

- Every statement runs under timeouts chosen by the lock it takes (``dbops.migration_guard``),
  never the application's request timeouts.
- A lock timeout inside an atomic migration rolls the migration back and runs it again, up to
  ``DBOPS["MIGRATION_LOCK_ATTEMPTS"]`` times; the final error names the sessions in the way.
- One migrate at a time per database (``dbops.migrate_lock``).
- The toolkit's errors (``DbopsError``) end the command with their message, no traceback.

This command replaces Django's because ``dbops`` is an installed app (a project command of the same
name, or an app listed before ``dbops`` with one, would replace it in turn).
"""

from __future__ import annotations

import time

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DatabaseError, connections

from dbops.errors import LOCK_NOT_AVAILABLE, sqlstate
from dbops.exceptions import DbopsError, MigrationLockTimeout
from dbops.migrate_lock import migrate_lock
from dbops.migration_guard import LockWait, MigrationGuard, migration_guard


class Command(DjangoMigrate):
    help = (
        "Updates database schema, one migrate at a time per database, each statement under "
        "timeouts chosen by the lock it takes: a short lock timeout with retries where reads or "
        "writes would queue behind it, none for CONCURRENTLY builds and VALIDATE CONSTRAINT "
        "(settings: DBOPS MIGRATION_* in dbops/conf.py; docs: docs/dbops/commands.md, migrate)."
    )

    def handle(self, *args, **options):
        self._applying, self._guard = None, None
        self.verbosity = options["verbosity"]
        if options["plan"] or options["check_unapplied"]:
            return super().handle(*args, **options)
        database = options["database"]
        try:
            with (
                migrate_lock(database, on_wait=self._say),
                migration_guard(connections[database]) as guard,
            ):
                self._guard = guard
                return self._with_retries(guard, *args, **options)
        except DbopsError as exc:
            raise CommandError(str(exc)) from exc

    def _say(self, text: str) -> None:
        if self.verbosity >= 1:
            self.stdout.write(self.style.WARNING(text))

    def _with_retries(self, guard: MigrationGuard, *args, **options):
        attempts = guard.limits.attempts
        for attempt in range(1, attempts + 1):
            try:
                return super().handle(*args, **options)
            except DatabaseError as exc:
                if sqlstate(exc) != LOCK_NOT_AVAILABLE or guard.last_wait is None:
                    raise
                migration, wait = self._applying, guard.last_wait
                if migration is None or not migration.atomic or attempt == attempts:
                    # Outside an atomic migration nothing can be run again from a clean start.
                    whole = migration is not None and migration.atomic
                    raise MigrationLockTimeout(
                        wait.message(attempt if whole else 1, rolled_back=whole)
                    ) from exc
                self._retry_later(guard, wait, attempt, attempts)
        raise AssertionError("unreachable")

    def _retry_later(self, guard: MigrationGuard, wait: LockWait, attempt: int, attempts: int):
        delay = guard.limits.backoff_s(attempt)
        self._say(
            f"\n  {wait.what}: lock timeout after {wait.lock_ms} ms (attempt {attempt} of "
            f"{attempts}); rolled back, running it again in {delay:.1f} s. "
            + "; ".join(b.describe() for b in wait.blockers)
        )
        guard.last_wait = None
        time.sleep(delay)

    def migration_progress_callback(self, action, migration=None, fake=False):
        guard = self._guard
        if action in ("apply_start", "unapply_start"):
            self._applying = migration
            if guard is not None:
                guard.applying = str(migration)
        elif action in ("apply_success", "unapply_success"):
            self._applying = None
            if guard is not None:
                guard.applying = ""
        super().migration_progress_callback(action, migration, fake)
