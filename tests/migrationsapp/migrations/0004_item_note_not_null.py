from django.db import migrations

from dbops.operations import SetNotNullPhased


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("migrationsapp", "0003_item_note_check")]

    operations = [SetNotNullPhased("item", "note")]
