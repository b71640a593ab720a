"""Environment reading that fails at start, naming the variable, when a value is malformed."""

from __future__ import annotations

from collections.abc import Mapping

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StrictEnv(environ.Env):
    """django-environ with strict booleans and integers.

    ``environ.Env.bool`` reads anything it does not know as False, so ``DB_POOL=ture`` would quietly
    turn the pool off; here it is an error that names the variable and the accepted values.
    """

    def __init__(self, environ_: Mapping[str, str] | None = None, **scheme):
        super().__init__(**scheme)
        if environ_ is not None:
            self.ENVIRON = environ_

    def bool(self, var, default=environ.Env.NOTSET):
        raw = self.ENVIRON.get(var)
        if raw is None or raw.strip() == "":
            return self._default(var, default)
        value = raw.strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ImproperlyConfigured(f"{var}={raw!r} is not a boolean: use true or false.")

    def int(self, var, default=environ.Env.NOTSET, *, minimum: int | None = None):
        raw = self.ENVIRON.get(var)
        if raw is None or raw.strip() == "":
            return self._default(var, default)
        try:
            value = int(raw.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{var}={raw!r} is not a whole number.") from None
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{var}={raw!r} must be at least {minimum}.")
        return value

    def float(self, var, default=environ.Env.NOTSET, *, minimum: float | None = None):
        raw = self.ENVIRON.get(var)
        if raw is None or raw.strip() == "":
            return self._default(var, default)
        try:
            value = float(raw.strip())
        except ValueError:
            raise ImproperlyConfigured(f"{var}={raw!r} is not a number.") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ImproperlyConfigured(f"{var}={raw!r} is not a finite number.")
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{var}={raw!r} must be at least {minimum}.")
        return value

    def _default(self, var, default):
        if default is environ.Env.NOTSET:
            raise ImproperlyConfigured(f"Set the {var} environment variable.")
        return default
