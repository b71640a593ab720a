"""Primary keys from untrusted input: one rule for services, views and query strings."""

from __future__ import annotations

from typing import Any

BIGINT_MAX = 2**63 - 1


def id_parse(value: Any) -> int | None:
    """A positive bigint from an int or a string of ASCII digits; None for anything else.

    ``str.isdigit()`` alone is not enough: it accepts "²" and "①", which ``int()`` refuses, and
    Arabic-Indic digits, which ``int()`` quietly reads.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 19:
            return None
        value = int(text)
    if isinstance(value, int) and 0 < value <= BIGINT_MAX:
        return value
    return None
