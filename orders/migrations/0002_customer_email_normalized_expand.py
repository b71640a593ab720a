# Expand: add the column nullable. Adding a nullable column without a default only changes the
# catalog (no table rewrite, no scan), so this is safe on a large table inside a transaction.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("orders", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="customer",
            name="email_normalized",
            field=models.CharField(editable=False, max_length=254, null=True),
        ),
    ]
