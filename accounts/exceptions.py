"""Domain errors of the accounts app: each carries the data a caller needs to explain it.

The errors every app shares (``InvalidAmount``, ``InvalidChange``, ``IdempotencyConflict``,
``StaleVersion``) live in ``core.exceptions`` and are named here too, so callers import one module.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.exceptions import (
    DomainError,
    IdempotencyConflict,
    InvalidAmount,
    InvalidChange,
    StaleVersion,
)
from core.money import money_format

__all__ = [
    "AccountNotFound",
    "AccountsError",
    "CurrencyMismatch",
    "DomainError",
    "IdempotencyConflict",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidChange",
    "NotAccountOwner",
    "SameAccount",
    "StaleVersion",
]


class AccountsError(DomainError):
    """Base of the errors only the accounts app raises."""


class SameAccount(AccountsError):
    message = "Source and target must be different accounts."


class AccountNotFound(AccountsError):
    def __init__(self, account_id: Any):
        self.account_id = account_id
        super().__init__(f"Account {account_id} does not exist.")


class NotAccountOwner(AccountsError):
    def __init__(self, account_id: int):
        self.account_id = account_id
        super().__init__(f"Account {account_id} is not yours.")


class CurrencyMismatch(AccountsError):
    def __init__(self, source_currency: str, target_currency: str):
        self.source_currency = source_currency
        self.target_currency = target_currency
        super().__init__(f"Cannot move {source_currency} into a {target_currency} account.")


class InsufficientFunds(AccountsError):
    def __init__(self, account, requested: Decimal):
        self.account = account
        self.requested = requested
        self.available = account.balance
        super().__init__(
            f"Insufficient funds: {money_format(account.balance, account.currency)} available, "
            f"{money_format(requested, account.currency)} requested."
        )
