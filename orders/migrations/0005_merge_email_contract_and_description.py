# Joins the two branches after 0001: the email expand -> contract (0002, 0003) and the product
# description (0004), which do not depend on each other. No operation: on a database that has
# 0001-0004 it only records itself. See 0004's comment for why the graph is shaped so.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0003_customer_email_normalized_contract"),
        ("orders", "0004_product_description"),
    ]

    operations = []
