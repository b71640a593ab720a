import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The table that will keep deposit idempotency keys unique per account once the ledger is
    partitioned (a partitioned table cannot: its unique constraints must contain created_at).
    New and empty: filled by the trigger 0003 puts on the partitioned ledger."""

    dependencies = [
        ("accounts", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="LedgerKey",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "account_id",
                        "idempotency_key",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                (
                    "account",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="accounts.account",
                    ),
                ),
                ("idempotency_key", models.CharField(max_length=64)),
                ("entry_id", models.BigIntegerField()),
                ("entry_created_at", models.DateTimeField()),
            ],
        ),
    ]
