from django.db import models


class Item(models.Model):
    """The fresh project's own table: ``code`` is added nullable, backfilled, then made NOT NULL."""

    name = models.CharField(max_length=100)
    code = models.CharField(max_length=40, null=True)  # noqa: DJ001 (expand: filled later)

    def __str__(self):
        return self.name
