"""Test data, made through the same services the application uses."""

from __future__ import annotations

import itertools
from decimal import Decimal

from django.contrib.auth import get_user_model

from accounts.models import Account
from accounts.services import account_deposit

_seq = itertools.count(1)


def user_create(username: str | None = None, **extra):
    username = username or f"user{next(_seq)}"
    return get_user_model().objects.create_user(
        username=username, password=f"pw-{username}-123", **extra
    )


def account_create(
    *, owner=None, balance: str | Decimal = "0", currency: str = "EUR", name: str | None = None
):
    """An account whose opening balance is a real deposit, so its ledger matches from the start."""
    account = Account.objects.create(
        owner=owner or user_create(), name=name or f"Account {next(_seq)}", currency=currency
    )
    if Decimal(balance) > 0:
        account_deposit(account_id=account.pk, amount=Decimal(balance))
        account.refresh_from_db()
    return account


def customer_create(*, user=None, region: str = "north", name: str | None = None):
    from orders.services import customer_create as create

    n = next(_seq)
    return create(user=user, name=name or f"Customer {n}", email=f"c{n}@example.com", region=region)


def product_create(
    *, stock: int = 10, price: str = "9.99", sku: str | None = None, description: str = ""
):
    from orders.models import Product

    n = next(_seq)
    return Product.objects.create(
        sku=sku or f"T-{n:05d}",
        name=f"Thing {n}",
        price=Decimal(price),
        stock=stock,
        description=description,
    )
