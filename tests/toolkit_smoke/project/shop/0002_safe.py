# The safe operations of django-dbops: outside a transaction, hence atomic = False.
from django.db import migrations, models

from dbops.operations import AddIndexConcurrently, SetNotNullPhased


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("shop", "0001_initial")]

    operations = [
        AddIndexConcurrently(
            model_name="item", index=models.Index(fields=["name"], name="shop_item_name_idx")
        ),
        SetNotNullPhased(model_name="item", field_name="code"),
    ]
