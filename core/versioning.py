"""Optimistic locking: one conditional UPDATE, no lock held while a person edits."""

from __future__ import annotations

from typing import Any, TypeVar

from django.db.models import F, Model

from core.exceptions import StaleVersion

M = TypeVar("M", bound=Model)


def versioned_update(model: type[M], *, pk: Any, expected_version: int, **values: Any) -> M | None:
    """``UPDATE ... SET <values>, version = version + 1 WHERE id = %s AND version = %s``.

    Returns the row as it is now, None when there is no such row, and raises ``StaleVersion`` (with
    the current row) when someone changed it since ``expected_version`` was read: a second editor
    working from the same version changes nothing instead of overwriting the first edit.
    """
    updated = model._default_manager.filter(pk=pk, version=expected_version).update(
        **values, version=F("version") + 1
    )
    current = model._default_manager.filter(pk=pk).first()
    if current is not None and not updated:
        raise StaleVersion(current)
    return current
