"""Test data for the toolkit's tests, made with the test app's models and Django's users only."""

from __future__ import annotations

import itertools

from django.contrib.auth import get_user_model

from .models import Child, Parent

_seq = itertools.count(1)


def person_create(username: str | None = None, **extra):
    """A user of django.contrib.auth (the toolkit knows no other kind of person)."""
    username = username or f"person{next(_seq)}"
    return get_user_model().objects.create_user(
        username=username, password=f"pw-{username}-123", **extra
    )


def parent_create(*, owner=None, name: str | None = None, **fields) -> Parent:
    n = next(_seq)
    return Parent.objects.create(
        owner=owner, name=name or f"Parent {n}", sku=fields.pop("sku", f"P-{n:05d}"), **fields
    )


def child_create(*, parent: Parent, quantity: int = 1, **fields) -> Child:
    return Child.objects.create(parent=parent, quantity=quantity, **fields)
