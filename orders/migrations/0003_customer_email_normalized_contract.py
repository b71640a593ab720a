# Contract: after the backfill, make email_normalized unique and NOT NULL without blocking writes.
#
# makemigrations wrote AddConstraint (a unique index built under a lock that blocks writes for the
# whole build) and AlterField(null=False) (a full-table scan under ACCESS EXCLUSIVE); reviewed into
# their concurrent and phased forms, which cannot run in a transaction: hence atomic = False.
from django.db import migrations, models

from dbops.operations import AddUniqueConstraintConcurrently, RequireNoNulls, SetNotNullPhased

BACKFILL = 'python manage.py backfill_column orders.Customer email_normalized --expression "lower(btrim(email))"'


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("orders", "0002_customer_email_normalized_expand")]

    operations = [
        # Stops here, before any lock, while rows are left to fill, naming the command to run.
        RequireNoNulls(model_name="customer", field_name="email_normalized", command=BACKFILL),
        AddUniqueConstraintConcurrently(
            model_name="customer",
            constraint=models.UniqueConstraint(
                fields=["email_normalized"], name="customer_email_normalized_unique"
            ),
        ),
        SetNotNullPhased(model_name="customer", field_name="email_normalized"),
    ]
