# The price raise's run record (orders.bulk.product_prices_raise): a new, empty table, so creating
# it with its check constraint holds no lock any other query waits for. Safe inside a transaction.
# The previous release never touches it; apply it before the code that writes it (the usual order).
#
# It depends on 0004 (the product branch), not on the email contract (0003, via 0005), for 0004's
# reason: the README's walk-through steps back to 0002, and that must not drop the runs' table and
# every raise's record with it. 0007 joins the branches again.

import django.db.models.functions.datetime
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0004_product_description"),
    ]

    operations = [
        migrations.CreateModel(
            name="PriceRaiseRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("percent", models.DecimalField(decimal_places=4, max_digits=8)),
                (
                    "sku_prefix",
                    models.CharField(blank=True, db_default="", default="", max_length=40),
                ),
                (
                    "batch_size",
                    models.PositiveIntegerField(help_text="products per batch (the last call's)"),
                ),
                (
                    "last_id",
                    models.BigIntegerField(
                        blank=True,
                        help_text="every product of the prefix up to this id is raised, none after it",
                        null=True,
                    ),
                ),
                (
                    "products",
                    models.BigIntegerField(db_default=0, default=0, help_text="products raised"),
                ),
                (
                    "batches",
                    models.IntegerField(db_default=0, default=0, help_text="batches committed"),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                (
                    "updated_at",
                    models.DateTimeField(
                        db_default=django.db.models.functions.datetime.Now(), editable=False
                    ),
                ),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-pk"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("batch_size__gte", 1)),
                        name="priceraiserun_batch_size_positive",
                    )
                ],
            },
        ),
    ]
