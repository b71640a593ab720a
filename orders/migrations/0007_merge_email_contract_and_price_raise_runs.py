# Joins the email expand -> contract branch (0002, 0003, 0005) and the price raise runs (0006), which
# do not depend on each other. No operation: see 0006's comment for why the graph is shaped so.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0005_merge_email_contract_and_description"),
        ("orders", "0006_priceraiserun"),
    ]

    operations = []
