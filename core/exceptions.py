"""Domain errors shared by the apps; each app's own errors derive from ``DomainError`` too.

A service raises one of these before it writes anything, or inside its transaction, which then
rolls back: when a caller sees a ``DomainError``, nothing of the call remains. Each carries the
data a caller needs to explain it.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every domain error; nothing was written when one is raised."""

    message = "The operation could not be done."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.message)


class InvalidChange(DomainError):
    def __init__(self, field: str, reason: str):
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class InvalidAmount(DomainError):
    def __init__(self, amount: Any, reason: str):
        self.amount = amount
        self.reason = reason
        super().__init__(f"Invalid amount {amount!r}: {reason}.")


class IdempotencyConflict(DomainError):
    def __init__(self, key: str):
        self.key = key
        super().__init__(
            f"Idempotency key {key!r} was already used for a different operation; "
            "use a new key for a new operation."
        )


class StaleVersion(DomainError):
    """Someone changed the row since the caller read ``expected_version``; nothing was written."""

    def __init__(self, current):
        self.current = current
        super().__init__(
            f"{current._meta.verbose_name.capitalize()} {current.pk} ({current}) was changed by "
            f"someone else (now version {current.version}); review its current values and apply "
            "your change again."
        )


# What a person is told when a service gave up waiting for rows another transaction held
# (``dbops.transactions.ServiceTransactionFailed``): nothing was written, and the same request
# may simply be sent again. Pages answer it with 409 Conflict.
BUSY_MESSAGE = (
    "Busy: someone else was changing the same records, so nothing was changed. "
    "Please try again in a moment."
)
