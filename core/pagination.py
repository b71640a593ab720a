"""Keyset pagination: cursors from the query string, pages in both directions."""

from dataclasses import dataclass

from django.core.exceptions import BadRequest

from core.ids import id_parse


def cursor_parse(raw: str | None) -> int | None:
    """A keyset cursor (a positive id) from ``?after=`` or ``?before=``; anything malformed is a 400."""
    if raw in (None, ""):
        return None
    cursor = id_parse(raw)
    if cursor is None:
        raise BadRequest("Malformed page cursor.")
    return cursor


def keyset_slice(queryset, *, after: int | None = None, before: int | None = None, limit: int):
    """Up to ``limit`` rows, newest (highest id) first: those just older than ``after``, or with
    ``before``, those just newer than it. Each is one index range scan, whatever the page number."""
    if before is not None:
        return list(queryset.filter(pk__gt=before).order_by("pk")[:limit])[::-1]
    if after is not None:
        queryset = queryset.filter(pk__lt=after)
    return list(queryset.order_by("-pk")[:limit])


@dataclass(frozen=True)
class KeysetPage:
    items: list
    newer: int | None  # the ?before= cursor of the next newer page; None on the newest page
    older: int | None  # the ?after= cursor of the next older page; None on the oldest page
    cursor: bool  # asked for with a cursor: an empty page then means "no more", not "none yet"


def keyset_cursors_check(after: int | None, before: int | None) -> None:
    if after is not None and before is not None:
        raise BadRequest("Use either ?after= or ?before=, not both.")


def keyset_page(fetch, *, after: int | None, before: int | None, size: int) -> KeysetPage:
    """A page from ``fetch(after=, before=, limit=)`` (a selector built on ``keyset_slice``) with
    the cursors of its neighbours. Asking for ``size + 1`` rows tells whether more lie beyond the
    page, in the same query: no COUNT, no second query."""
    keyset_cursors_check(after, before)
    rows = fetch(after=after, before=before, limit=size + 1)
    return keyset_page_of(rows, after=after, before=before, size=size)


def keyset_page_of(rows: list, *, after: int | None, before: int | None, size: int) -> KeysetPage:
    """The page of up to ``size + 1`` rows fetched newest first around the cursors (an async view
    fetches them itself, then calls this)."""
    if before is not None:
        more = len(rows) > size  # the extra row is the newest, first in the list
        items = rows[1:] if more else rows
        newer = items[0].pk if more else None
        older = items[-1].pk if items else None
    else:
        items = rows[:size]
        older = items[-1].pk if len(rows) > size else None
        newer = items[0].pk if after is not None and items else None
    return KeysetPage(items, newer, older, cursor=after is not None or before is not None)
