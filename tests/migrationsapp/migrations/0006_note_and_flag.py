# Atomic: a new table, then a column on the big one. A lock timeout on the second rolls back the
# first too; migrate runs the whole migration again (tests/dbops/test_migration_guard.py).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("migrationsapp", "0005_django_operations")]

    operations = [
        migrations.CreateModel(name="Note", fields=[("id", models.BigAutoField(primary_key=True))]),
        migrations.AddField("item", "flag", models.BooleanField(null=True)),
    ]
