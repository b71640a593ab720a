# Django's own operations in one atomic migration: each statement runs under the timeouts of the
# lock it takes (tests/dbops/test_migration_guard.py), Django's code unchanged.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrationsapp", "0004_item_note_not_null")]

    operations = [
        migrations.AddField("item", "label", models.CharField(max_length=20, null=True)),
        migrations.AlterField("item", "label", models.CharField(max_length=40, null=True)),
        migrations.RenameField("item", "label", "title"),
        migrations.RunSQL(
            "UPDATE migrationsapp_item SET title = 'x' WHERE false",
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.RemoveConstraint("item", "item_note_md5"),
        migrations.RemoveField("item", "title"),
    ]
    reviewed_unsafe = {
        (2, "dbops.E113"): "test app: the rename is what the test runs",
        (3, "dbops.E117"): "test app: updates no row",
        (5, "dbops.E110"): "test app: the drop is what the test runs",
    }
