"""Keyset pagination cursors from the query string."""

from django.core.exceptions import BadRequest


def cursor_parse(raw: str | None) -> int | None:
    """A keyset cursor (a positive id) from ``?after=``; anything malformed is a 400."""
    if raw in (None, ""):
        return None
    if not raw.isdigit() or len(raw) > 18 or int(raw) < 1:
        raise BadRequest("Malformed page cursor.")
    return int(raw)
