# A plain AddIndex on an existing table: CREATE INDEX blocks writes for the whole build, so the
# safety check (dbops.E101) must refuse it in `manage.py check` and `migrate`.
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_safe")]

    operations = [
        migrations.AddIndex(
            model_name="item", index=models.Index(fields=["code"], name="shop_item_code_idx")
        ),
    ]
