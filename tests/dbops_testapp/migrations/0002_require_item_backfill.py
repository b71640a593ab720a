# The contract step of an expand/backfill/contract change, gated on the backfill run itself: this
# migration refuses to run until the backfill of Item.name_upper has finished on the database
# (tests/dbops/test_backfill_gate.py). On an empty table (a fresh database) it passes.

from django.db import migrations

from dbops.backfill.gate import RequireBackfillFinished


class Migration(migrations.Migration):
    dependencies = [
        ("dbops_testapp", "0001_initial"),
        ("dbops", "0001_backfillrun"),
    ]

    operations = [
        RequireBackfillFinished(
            "Item",
            "name_upper",
            command='python manage.py backfill_column dbops_testapp.Item name_upper --expression "upper(name)"',
        ),
    ]
