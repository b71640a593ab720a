# Backfill runs steered from the admin (pause, resume, cancel, with their history), a checkpoint
# that holds any primary key (last_key: the key's columns as text), and pauses counted per health
# indicator. dbops_backfillrun holds one row per backfill ever run: every step here takes
# milliseconds.

import django.db.models.deletion
from django.db import migrations, models


def forwards(apps, schema_editor):
    BackfillRun = apps.get_model("dbops", "BackfillRun")
    for run in BackfillRun.objects.using(schema_editor.connection.alias).iterator():
        run.last_key = None if run.last_pk is None else [str(run.last_pk)]
        if run.replica_pauses:
            run.pauses = {
                "replica_lag": {"count": run.replica_pauses, "seconds": run.replica_paused_s}
            }
        run.save(update_fields=["last_key", "pauses"])


def backwards(apps, schema_editor):
    BackfillRun = apps.get_model("dbops", "BackfillRun")
    for run in BackfillRun.objects.using(schema_editor.connection.alias).iterator():
        key = run.last_key or []
        run.last_pk = int(key[0]) if len(key) == 1 and key[0].lstrip("-").isdigit() else None
        replica = (run.pauses or {}).get("replica_lag", {})
        run.replica_pauses = replica.get("count", 0)
        run.replica_paused_s = replica.get("seconds", 0)
        run.save(update_fields=["last_pk", "replica_pauses", "replica_paused_s"])


class Migration(migrations.Migration):
    dependencies = [
        ("dbops", "0003_backfillrun_replica_pauses"),
    ]

    # The CHANGELOG's upgrade note: let every backfill_column run finish (or stop it) before this
    # migration; the old code's commands are the only writers of these columns.
    _ONLY_BACKFILL_WRITES = (
        "dbops_backfillrun is written only by backfill_column commands, which must not run "
        "across this upgrade (docs/dbops/CHANGELOG.md, Upgrading); the admin page of runs is the "
        "only reader, for the seconds of the deploy"
    )
    reviewed_unsafe = {
        (2, "dbops.E117"): "dbops_backfillrun: one row per backfill run ever, a handful of rows",
        (3, "dbops.E110"): _ONLY_BACKFILL_WRITES,
        (4, "dbops.E110"): _ONLY_BACKFILL_WRITES,
        (5, "dbops.E110"): _ONLY_BACKFILL_WRITES,
        (6, "dbops.E110"): _ONLY_BACKFILL_WRITES,
        (15, "dbops.E102"): "dbops_backfillrun: one row per backfill run; the partial unique "
        "index builds in milliseconds",
    }

    operations = [
        migrations.AddField(
            model_name="backfillrun",
            name="last_key",
            field=models.JSONField(
                blank=True,
                help_text="every row up to this primary key is done (its columns, as text)",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="backfillrun",
            name="pauses",
            field=models.JSONField(blank=True, db_default={}, default=dict),
        ),
        migrations.RunPython(forwards, backwards),
        migrations.RemoveField(model_name="backfillrun", name="last_pk"),
        migrations.RemoveField(model_name="backfillrun", name="max_pk"),
        migrations.RemoveField(model_name="backfillrun", name="replica_paused_s"),
        migrations.RemoveField(model_name="backfillrun", name="replica_pauses"),
        migrations.AddField(
            model_name="backfillrun",
            name="keys_scanned",
            field=models.BigIntegerField(
                db_default=0, default=0, help_text="rows visited, filled or not"
            ),
        ),
        migrations.AddField(
            model_name="backfillrun",
            name="rows_estimate",
            field=models.BigIntegerField(
                blank=True,
                help_text="rows in the table when the run began (the planner's count)",
                null=True,
            ),
        ),
        migrations.AddField(
            model_name="backfillrun",
            name="rate",
            field=models.FloatField(
                db_default=0, default=0, help_text="rows filled per second, lately"
            ),
        ),
        migrations.AddField(
            model_name="backfillrun",
            name="eta_s",
            field=models.FloatField(blank=True, help_text="seconds left, at updated_at", null=True),
        ),
        migrations.AlterField(
            model_name="backfillrun",
            name="rows_done",
            field=models.BigIntegerField(default=0, help_text="rows filled"),
        ),
        migrations.AlterField(
            model_name="backfillrun",
            name="status",
            field=models.CharField(
                choices=[
                    ("running", "Running"),
                    ("paused", "Paused"),
                    ("failed", "Failed"),
                    ("done", "Done"),
                    ("cancelled", "Cancelled"),
                    ("abandoned", "Abandoned"),
                ],
                default="running",
                max_length=10,
            ),
        ),
        migrations.AlterModelOptions(
            name="backfillrun",
            options={
                "ordering": ["-pk"],
                "permissions": [
                    ("control_backfillrun", "Can pause, resume and cancel backfill runs")
                ],
            },
        ),
        migrations.RemoveConstraint(
            model_name="backfillrun",
            name="backfillrun_one_unfinished_per_target",
        ),
        migrations.AddConstraint(
            model_name="backfillrun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ["running", "paused", "failed"])),
                fields=("database", "target"),
                name="backfillrun_one_unfinished_per_target",
            ),
        ),
        migrations.CreateModel(
            name="BackfillEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("at", models.DateTimeField(auto_now_add=True)),
                (
                    "actor",
                    models.CharField(
                        help_text="a person's username, or the command's host:pid",
                        max_length=200,
                    ),
                ),
                (
                    "action",
                    models.CharField(
                        choices=[
                            ("start", "started"),
                            ("pause", "pause"),
                            ("resume", "resume"),
                            ("cancel", "cancel"),
                            ("paused", "paused"),
                            ("resumed", "resumed"),
                            ("stopped", "stopped"),
                            ("done", "done"),
                            ("failed", "failed"),
                        ],
                        max_length=10,
                    ),
                ),
                ("note", models.TextField(blank=True, default="")),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="dbops.backfillrun",
                    ),
                ),
            ],
            options={"ordering": ["at", "pk"]},
        ),
    ]
