# A large text column on a table that may be large. A constant db_default ('') is stored once in
# the catalog (PostgreSQL 11+): ADD COLUMN ... DEFAULT '' NOT NULL neither rewrites nor scans the
# table, and the default stays, so INSERTs from code that predates the column keep working during
# a rolling deploy. Safe inside a transaction.
#
# It depends on 0001 only, not on the email contract (0003): the two changes have nothing to do
# with each other, and the README's expand -> backfill -> contract walk-through steps back to 0002.
# Depending on 0003, that step unapplied this migration too, dropping every description (product
# pages failed meanwhile, and the descriptions were empty for good afterwards). 0005 joins the two
# branches. On a database where 0001-0004 are applied nothing changes; 0005 applies as a no-op.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="product",
            name="description",
            field=models.TextField(blank=True, db_default="", default=""),
        ),
    ]
