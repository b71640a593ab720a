"""The hot path's hand-written INSERTs (``accounts/sql.py``, compiled with ``dbops.statements``)
name every column the ORM would fill."""

from __future__ import annotations

import pytest
from django.db.models import NOT_PROVIDED

from accounts.models import LedgerEntry, Transfer
from accounts.sql import LEDGER_FIELDS, TRANSFER_FIELDS


def _left_to_the_database(field) -> bool:
    """A column an INSERT may leave out and still write what ``Model.objects.create`` would:
    the database's default, or NULL where the model has no default either."""
    return field.db_default is not NOT_PROVIDED or (field.null and not field.has_default())


@pytest.mark.parametrize(
    "model, fields",
    [(Transfer, TRANSFER_FIELDS), (LedgerEntry, LEDGER_FIELDS)],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_the_hot_path_inserts_name_every_column_the_orm_would_fill(model, fields):
    """A field added with a Python default must join the hot path's INSERT, or fail here."""
    listed = {model._meta.get_field(name) for name in fields}
    missing = [
        field.name
        for field in model._meta.concrete_fields
        if not field.primary_key and field not in listed and not _left_to_the_database(field)
    ]
    assert missing == []
