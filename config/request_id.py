"""One id per request, in every log line of that request and in the response.

``RequestIdMiddleware`` (first in ``MIDDLEWARE``) takes the ``X-Request-ID`` a proxy or load
balancer sent when it looks like one (1 to 128 letters, digits and ``._:+/=-``: no spaces, no line
breaks to forge log lines with), else makes one (a UUID4 in hex). It keeps it for the request in a
context variable and on ``request.request_id``, and echoes it in the response's ``X-Request-ID``, so
a person who reports an error page can quote it and it leads to the traceback.

``RequestIdFilter`` (on the console handler in ``LOGGING``) gives every record ``%(request_id)s``:
the context variable's, else the one on the record's request (Django logs a response's status
after every middleware has returned), else ``-`` (outside a request).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from dbops.middleware import SyncAndAsyncMiddleware

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
SANE = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")

_request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id_for(request) -> str:
    """The incoming id when it is sane, else a new one."""
    incoming = request.META.get(META_KEY, "")
    return incoming if SANE.fullmatch(incoming) else uuid.uuid4().hex


def current() -> str | None:
    return _request_id.get()


class RequestIdMiddleware(SyncAndAsyncMiddleware):
    """``X-Request-ID`` in, in every log line of the request, and out."""

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        token = self._begin(request)
        try:
            response = self.get_response(request)
        finally:
            _request_id.reset(token)
        response[HEADER] = request.request_id
        return response

    async def __acall__(self, request):
        token = self._begin(request)
        try:
            response = await self.get_response(request)
        finally:
            _request_id.reset(token)
        response[HEADER] = request.request_id
        return response

    @staticmethod
    def _begin(request):
        request.request_id = request_id_for(request)
        return _request_id.set(request.request_id)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (never filters one out)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = (
            _request_id.get()
            or getattr(getattr(record, "request", None), "request_id", None)
            or "-"
        )
        return True
