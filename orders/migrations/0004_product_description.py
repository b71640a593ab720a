# A large text column on a table that may be large. A constant db_default ('') is stored once in
# the catalog (PostgreSQL 11+): ADD COLUMN ... DEFAULT '' NOT NULL neither rewrites nor scans the
# table, and the default stays, so INSERTs from code that predates the column keep working during
# a rolling deploy. Safe inside a transaction.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0003_customer_email_normalized_contract")]

    operations = [
        migrations.AddField(
            model_name="product",
            name="description",
            field=models.TextField(blank=True, db_default="", default=""),
        ),
    ]
