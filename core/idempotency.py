"""Idempotency keys: one length limit and one cleaning rule for every service that takes one."""

from __future__ import annotations

from django.db.models import Q, UniqueConstraint

from core.exceptions import InvalidChange

IDEMPOTENCY_KEY_MAX = 64


def idempotency_key_clean(key: object) -> str | None:
    """The key without surrounding spaces, None for no key, ``InvalidChange`` when unusable."""
    if key is None:
        return None
    cleaned = str(key).strip()
    if not 1 <= len(cleaned) <= IDEMPOTENCY_KEY_MAX:
        raise InvalidChange("idempotency_key", f"must be 1 to {IDEMPOTENCY_KEY_MAX} characters")
    return cleaned


def idempotency_key_unique(scope: str, *, name: str) -> UniqueConstraint:
    """Keys are unique per ``scope`` (the caller that makes them), and optional."""
    return UniqueConstraint(
        fields=[scope, "idempotency_key"], condition=Q(idempotency_key__isnull=False), name=name
    )
