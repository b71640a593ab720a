"""Tables for the toolkit's tests: the same columns behind three kinds of primary key."""

import os
import time
import uuid

from django.db import models
from django.db.models.functions import Now


def uuid7() -> uuid.UUID:
    """A UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then random bits, so values
    sort by creation time (what new projects pick for keys; Python has it from 3.14)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & (2**48 - 1)) << 80
    value |= 0x7 << 76 | (rand >> 62 & 0xFFF) << 64  # version, 12 random bits
    value |= 0b10 << 62 | rand & (2**62 - 1)  # variant, 62 random bits
    return uuid.UUID(int=value)


class Named(models.Model):
    class Meta:
        abstract = True

    def __str__(self):
        return self.name


class Item(Named):
    """Keyed by a bigint, like most tables."""

    name = models.CharField(max_length=100)
    # NULL until a backfill fills it: what the tests fill.
    name_upper = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
    note = models.CharField(max_length=100, blank=True, default="")


class UuidItem(Named):
    """Keyed by a UUIDv7."""

    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    name = models.CharField(max_length=100)
    # NULL until a backfill fills it: what the tests fill.
    name_upper = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001


class CompositeItem(Named):
    """Keyed by two columns of two types (Django 5.2's CompositePrimaryKey)."""

    pk = models.CompositePrimaryKey("tenant", "code")
    tenant = models.IntegerField()
    code = models.CharField(max_length=20)
    name = models.CharField(max_length=100)
    # NULL until a backfill fills it: what the tests fill.
    name_upper = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001


class Parent(models.Model):
    """A row a person owns, edits under an optimistic version and takes stock from: what the
    routing, fault, PgBouncer and statement tests read and write (the project's accounts and
    products play these parts in its own tests)."""

    owner = models.ForeignKey(
        "auth.User", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    name = models.CharField(max_length=200)
    sku = models.CharField(max_length=40, unique=True, null=True, blank=True)  # noqa: DJ001
    region = models.CharField(max_length=20, default="north")
    stock = models.IntegerField(default=0)
    balance = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    version = models.PositiveIntegerField(default=1)
    note = models.CharField(max_length=100, blank=True, default="")
    # With a database default: a column the rolling-deploy rules let a release stop writing.
    description = models.TextField(blank=True, db_default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        # An index for the tests to drop and build again (RemoveIndexConcurrently).
        indexes = [models.Index(fields=["region"], name="parent_region")]
        constraints = [
            models.CheckConstraint(condition=models.Q(stock__gte=0), name="parent_stock_gte_0"),
            models.CheckConstraint(condition=models.Q(balance__gte=0), name="parent_balance_gte_0"),
        ]

    def __str__(self):
        return self.name


class Child(models.Model):
    """Stock taken from a parent, once per key."""

    parent = models.ForeignKey(Parent, on_delete=models.CASCADE, related_name="children")
    quantity = models.PositiveIntegerField()
    key = models.CharField(max_length=40, unique=True, null=True, blank=True)  # noqa: DJ001
    note = models.CharField(max_length=100, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(quantity__gt=0), name="child_quantity_gt_0")
        ]

    def __str__(self):
        return f"{self.quantity} of {self.parent_id}"
