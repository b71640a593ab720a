from django.db import models


class Item(models.Model):
    """After 0002: ``code`` NOT NULL (SetNotNullPhased), ``name`` indexed (AddIndexConcurrently)."""

    name = models.CharField(max_length=100)
    code = models.CharField(max_length=40)

    class Meta:
        indexes = [models.Index(fields=["name"], name="shop_item_name_idx")]

    def __str__(self):
        return self.name
