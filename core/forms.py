"""Form fields the apps share, and the one-time key of a form's rendering."""

from __future__ import annotations

import re
from decimal import Decimal
from uuid import uuid4

from django import forms
from django.http import HttpResponseRedirect

from core.exceptions import InvalidAmount
from core.idempotency import IDEMPOTENCY_KEY_MAX
from core.money import MONEY_DIGITS, MONEY_MAX, MONEY_PLACES, MONEY_TEXT_HELP, money_text_check

# The key of a form's rendering lives in the page's address, ``?key=...``, and in a hidden field.
#
# Why the address: after a transfer, Back goes to the form's page. It is never stored (no-store),
# so the browser asks for it again, and a key minted afresh for that request would make a new
# form, which Chromium then refills with the values typed before: Send would move the money a
# second time. With the key in the address, Back asks for the same rendering: the view finds the
# transfer that key made and says so, and sending the form again is a replay of that key, which
# the service answers with the first transfer. The same holds when the browser restores the page
# from its back/forward cache without asking (the restored form carries its key). A new form is
# a new address: the navigation links point to the page without a key, which redirects to a
# fresh one.
FORM_KEY_PARAM = "key"
_FORM_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def form_key(request) -> str | None:
    """The one-time key of this form rendering, from the address (``?key=``); None if absent or
    not one of ours."""
    value = request.GET.get(FORM_KEY_PARAM, "")
    return value if _FORM_KEY.fullmatch(value) else None


def form_key_redirect(request) -> HttpResponseRedirect:
    """The same page at an address of its own: ``?key=`` with a fresh key."""
    query = request.GET.copy()
    query[FORM_KEY_PARAM] = uuid4().hex
    return HttpResponseRedirect(f"{request.path}?{query.urlencode()}")


class IdempotencyKeyField(forms.CharField):
    """The hidden one-time key of a form rendering (``form_key``): a double click, a browser
    retry, or Back and Send send the same key, and the service acts once."""

    widget = forms.HiddenInput

    def __init__(self, **kwargs):
        super().__init__(max_length=IDEMPOTENCY_KEY_MAX, **kwargs)


class MultilineTextField(forms.CharField):
    """Text from a ``<textarea>``: browsers send its line breaks as CRLF, which made text stored
    with LF "changed" by every save of the form (and rewrote its line endings)."""

    widget = forms.Textarea

    def to_python(self, value):
        value = super().to_python(value)
        return value.replace("\r\n", "\n") if isinstance(value, str) else value


class AmountField(forms.DecimalField):
    """An amount of money, within what the money columns hold (positive unless ``min_value`` says
    otherwise), typed in digits with a decimal point: Django's ``DecimalField`` reads "1e3" as
    1,000 and "١٢" as 12 (``core.money.MONEY_TEXT``)."""

    default_error_messages = {"invalid": f"Enter an amount: {MONEY_TEXT_HELP}."}

    def __init__(self, **kwargs):
        kwargs.setdefault("min_value", Decimal("0.01"))
        super().__init__(
            max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES, max_value=MONEY_MAX, **kwargs
        )

    def to_python(self, value):
        if isinstance(value, str) and value.strip():
            try:
                value = money_text_check(value)
            except InvalidAmount:
                raise forms.ValidationError(
                    self.error_messages["invalid"], code="invalid"
                ) from None
        return super().to_python(value)
