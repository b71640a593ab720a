"""A migration that waits for a backfill run to finish, as GitLab's
``ensure_batched_background_migration_is_finished`` does.

``RequireNoNulls`` (``dbops.operations``) asks the table whether rows are left to fill. This asks
the run: the newest ``backfill_column`` run of the target on the migration's database must be
done. Unfinished (running, paused by a person, failed) or cancelled, the migration stops before it
changes anything, naming the run's state and the command that finishes it. With no run at all it
stops too, unless the table is empty (a fresh database, where there is nothing to fill).

The migration must depend on ``("dbops", "0001_backfillrun")``: the gate reads only columns the
run table has had since then (so later changes to the table do not break old migrations)::

    class Migration(migrations.Migration):
        dependencies = [("shop", "0002_..."), ("dbops", "0001_backfillrun")]
        operations = [
            RequireBackfillFinished(
                "Customer", "email_normalized",
                command='python manage.py backfill_column shop.Customer email_normalized '
                        '--expression "lower(btrim(email))"',
            ),
            ...
        ]
"""

from __future__ import annotations

import json

from django.db.migrations.operations.base import Operation

from dbops.backfill.control import command_for
from dbops.operations import MigrationBlocked

FINISHED = "done"


class RequireBackfillFinished(Operation):
    """Stop the migration, before it takes any lock, until the target's backfill run is done."""

    reversible = True
    reduces_to_sql = False

    def __init__(self, model_name: str, field_name: str, command: str = "", app_label: str = ""):
        self.model_name = model_name
        self.field_name = field_name
        self.command = command  # shown when no run exists yet
        self.app_label = app_label  # another app's model; default: the migration's own

    def deconstruct(self):
        kwargs = {"model_name": self.model_name, "field_name": self.field_name}
        if self.command:
            kwargs["command"] = self.command
        if self.app_label:
            kwargs["app_label"] = self.app_label
        return self.__class__.__name__, [], kwargs

    def state_forwards(self, app_label, state):
        pass

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        model = to_state.apps.get_model(self.app_label or app_label, self.model_name)
        connection = schema_editor.connection
        if not self.allow_migrate_model(connection.alias, model):
            return
        target = f"{model._meta.app_label}.{model.__name__}.{self.field_name}"
        q = schema_editor.quote_name
        with connection.cursor() as cursor:
            # Plain reads (ACCESS SHARE): they block nobody.
            cursor.execute(
                "SELECT id, status, rows_done, options FROM dbops_backfillrun"
                " WHERE database = %s AND target = %s ORDER BY id DESC LIMIT 1",
                [connection.alias, target],
            )
            run = cursor.fetchone()
            if run is None:
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {q(model._meta.db_table)})")  # noqa: S608 (quoted)
                if not cursor.fetchone()[0]:
                    return  # an empty table: nothing to fill
        if run is None or run[1] != FINISHED:
            raise MigrationBlocked(self._message(target, connection.alias, run))

    def _message(self, target: str, alias: str, run: tuple | None) -> str:
        stopped = "so this migration stopped before changing anything."
        if run is None:
            command = self.command or _generic_command(target)
            return (
                f"No backfill of {target} has run on the database {alias!r}, {stopped} "
                f"Run:\n\n    {command}\n\nthen run migrate again."
            )
        run_id, status, rows_done, options = run
        if isinstance(options, str):
            options = json.loads(options)
        command = command_for(target, options, alias)
        admin = f"/admin/dbops/backfillrun/{run_id}/change/"
        state = f"run #{run_id} is {status} after {rows_done:,} rows"
        if status == "paused":
            todo = f"Resume it in the admin ({admin}); if no command is running it, run:"
        elif status == "cancelled":
            todo, command = f"It was cancelled ({admin}). Start it over:", command + " --restart"
        else:
            todo = f"Let its command finish, or run it again to resume ({admin}):"
        return (
            f"The backfill of {target} has not finished ({state}), {stopped} {todo}"
            f"\n\n    {command}\n\nthen run migrate again."
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        pass

    def describe(self):
        return f"Require the backfill of {self.model_name}.{self.field_name} to have finished"


def _generic_command(target: str) -> str:
    label, _, field_name = target.rpartition(".")
    return f"python manage.py backfill_column {label} {field_name} --expression '...'"
