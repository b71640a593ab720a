"""Domain errors of the accounts app: each carries the data a caller needs to explain it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any


class AccountsError(Exception):
    """Base of every domain error here; nothing was written when one is raised."""

    message = "The operation could not be done."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


class InvalidAmount(AccountsError):
    def __init__(self, amount: Any, reason: str):
        self.amount = amount
        self.reason = reason
        super().__init__(f"Invalid amount {amount!r}: {reason}.")


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
            f"Insufficient funds: {account.balance} {account.currency} available, {requested} requested."
        )


class IdempotencyConflict(AccountsError):
    def __init__(self, key: str):
        self.key = key
        super().__init__(
            f"Idempotency key {key!r} was already used for a different operation; "
            "use a new key for a new operation."
        )


class InvalidChange(AccountsError):
    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class StaleVersion(AccountsError):
    def __init__(self, current):
        self.current = current
        super().__init__(
            f"Account {current.pk} was changed by someone else (now version {current.version}); "
            "review its current values and apply your change again."
        )
