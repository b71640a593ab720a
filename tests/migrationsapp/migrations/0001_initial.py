# The table the big-table tests fill (1.5 million rows) before they apply the rest.
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Item",
            fields=[
                ("id", models.BigAutoField(primary_key=True)),
                ("n", models.IntegerField()),
                ("note", models.TextField(null=True)),
            ],
        ),
    ]
