"""Logging in: forms that validate every field, and failed-login throttling.

Django's ``AuthenticationForm`` sets the username's ``max_length`` after the field is built, so the
limit reaches the HTML attribute but no validator: an over-long name went on to ``authenticate()``
(and to the throttle's 255-character column, a 500). ``LoginForm`` adds the validator.

Throttling uses django-axes, its records in PostgreSQL (so every worker process sees them). Two
limits, counted over the cool-off window:
- ``AXES_FAILURE_LIMIT`` failures for one username from one client address lock that pair: a
  guesser is stopped, while the owner can still log in from elsewhere (a per-username lock alone
  would let anyone lock anyone out);
- ``LOGIN_ADDRESS_FAILURE_LIMIT`` failures from one address over all usernames lock the address:
  spraying one password over many accounts is stopped too. It is higher, because many people can
  share an address (an office, a carrier's NAT).
"""

from __future__ import annotations

import ipaddress

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator
from django.db.models import Q, Sum
from django.db.models.functions import Coalesce


class LoginForm(AuthenticationForm):
    """Django's login form, with the username's length limit enforced, and a warning before the
    throttle locks the login: how many tries are left from this address."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.validators.append(MaxLengthValidator(username.max_length))

    def get_invalid_login_error(self):
        error = super().get_invalid_login_error()
        left = login_attempts_left(self.request, self.cleaned_data.get("username"))
        if left is None:
            return error
        minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
        tries = "1 more failed attempt" if left == 1 else f"{left} more failed attempts"
        warning = f" {tries} and this login is locked from this address for {minutes} minutes."
        return forms.ValidationError(error.message + warning, code=error.code, params=error.params)


def login_attempts_left(request, username: str | None) -> int | None:
    """Failed logins left before the throttle locks ``username`` from this request's address (or
    the address itself); None when the throttle has not looked at this request."""
    if request is None or getattr(request, "axes_ip_address", None) is None:
        return None
    failures = LoginThrottleHandler().get_failures(request, {"username": username})
    return max(settings.AXES_FAILURE_LIMIT - failures, 0)


class AdminLoginForm(LoginForm, AdminAuthenticationForm):
    """The admin's login form (staff only), with the same limit."""


def client_address(request) -> str | None:
    """The client's IP address: ``REMOTE_ADDR``, or with ``TRUSTED_PROXY_COUNT`` proxies in front
    of the app, the address the outermost trusted proxy saw (counted from the right of
    ``X-Forwarded-For``, the part a client cannot forge)."""
    candidates = [request.META.get("REMOTE_ADDR", "")]
    proxies = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if proxies:
        forwarded = [p.strip() for p in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        if len(forwarded) >= proxies:
            candidates.insert(0, forwarded[-proxies])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None


class LoginThrottleHandler(AxesDatabaseHandler):
    """django-axes' database handler with a per-address limit beside the per-username one."""

    def get_failures(self, request, credentials: dict | None = None) -> int:
        attempts = AccessAttempt.objects.filter(ip_address=request.axes_ip_address)
        if settings.AXES_COOLOFF_TIME is not None:
            attempts = attempts.filter(attempt_time__gte=get_cool_off_threshold(request))
        username = get_client_username(request, credentials)
        totals = attempts.aggregate(
            address=Coalesce(Sum("failures_since_start"), 0),
            account=Coalesce(Sum("failures_since_start", filter=Q(username=username)), 0),
        )
        # axes compares this one number with AXES_FAILURE_LIMIT; the address count is scaled so
        # that it reaches that limit exactly when it reaches its own.
        per_account, per_address = settings.AXES_FAILURE_LIMIT, settings.LOGIN_ADDRESS_FAILURE_LIMIT
        return max(totals["account"], totals["address"] * per_account // per_address)
