# A CHECK added NOT VALID (Django's operation, a brief lock), then validated: a scan of the whole
# table (a regular expression per row) that blocks no one.
from django.contrib.postgres.operations import AddConstraintNotValid
from django.db import migrations, models

from dbops.operations import ValidateConstraintWithLockTimeout


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("migrationsapp", "0002_item_n_index")]

    operations = [
        AddConstraintNotValid(
            "item",
            models.CheckConstraint(
                condition=models.Q(note__regex=r"^[0-9a-f]{32}$"), name="item_note_md5"
            ),
        ),
        ValidateConstraintWithLockTimeout("item", "item_note_md5"),
    ]
