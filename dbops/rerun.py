"""Which requests may run again after a database failure, and how a view says so.

A request that failed on the read replica, or whose connection broke under a statement (a killed
backend, a server connection PgBouncer handed over dead), before it sent anything that may write,
can be run again from the start, on the primary or a fresh connection (``dbops.middleware``). But
running it again runs the whole view again, not only its queries: a call to a payment gateway, an
e-mail or a message to a queue would happen twice. So a request runs again only when repeating it
is safe:

- the view had not started yet (the failure came from a middleware: nothing of the view ran);
- or the method is safe (GET, HEAD, OPTIONS, TRACE: RFC 9110's methods that change nothing) and
  the view is not marked ``@not_idempotent`` (a GET that calls out, say);
- or the view is marked ``@idempotent``: running it twice does what running it once does (a form
  whose service takes an idempotency key, and that has no other effect).

Anything else is answered 503, "nothing was saved: try again", rather than run twice.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
ATTRIBUTE = "dbops_idempotent"

View = TypeVar("View", bound=Callable)


def idempotent(view: View) -> View:
    """Mark a view (function or class) safe to run again after a database failure, whatever the
    method. Only for views whose every effect is idempotent: a service called with an idempotency
    key, and no call to the outside world."""
    setattr(view, ATTRIBUTE, True)
    return view


def not_idempotent(view: View) -> View:
    """Mark a view never to be run again, even for a GET (it calls an outside service, say)."""
    setattr(view, ATTRIBUTE, False)
    return view


def view_policy(view_func) -> bool | None:
    """The mark of a view function, or of the class behind ``as_view()``; None when unmarked.
    Decorators that use ``functools.wraps`` (``login_required``...) carry it outward."""
    for candidate in (view_func, getattr(view_func, "view_class", None)):
        marked = getattr(candidate, ATTRIBUTE, None)
        if marked is not None:
            return bool(marked)
    return None


def allowed(method: str, *, view_started: bool, view_rerun: bool | None) -> bool:
    """May a request that failed before it sent any write run again?"""
    if not view_started:
        return True
    if view_rerun is not None:
        return view_rerun
    return method.upper() in SAFE_METHODS
