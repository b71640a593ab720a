# A concurrent index: its build outlasts the application's statement timeout on a big table.
from django.db import migrations, models

from dbops.operations import AddIndexConcurrently


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("migrationsapp", "0001_initial")]

    operations = [
        AddIndexConcurrently("item", models.Index(fields=["n"], name="item_n_idx")),
    ]
