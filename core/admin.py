"""Admin helpers: edits through a service's optimistic locking (a conflict is a message, never a
lost edit), and autocomplete widgets that survive any submitted value."""

from __future__ import annotations

from typing import Any

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters, csrf_protect_m
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AutocompleteSelect
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from core.exceptions import BUSY_MESSAGE
from dbops.transactions import ServiceTransactionFailed


class KeyCheckedAutocompleteSelect(AutocompleteSelect):
    """Django's autocomplete widget, minus a server error.

    When a form is shown again with errors, Django's widget looks the submitted value up in the
    database to show its label; a value that is not a key at all ("abc", "²", 5,000 digits) made
    that lookup raise ``ValueError``: a 500 instead of the form's "Select a valid choice" error.
    Here such values are left out of the lookup; the form still reports them.
    """

    def optgroups(self, name, value, attr=None):
        remote = self.field.remote_field
        target = remote.model._meta.get_field(remote.field_name)

        def is_key(candidate) -> bool:
            try:
                target.get_prep_value(target.to_python(candidate))
            except (ValueError, TypeError, ValidationError):
                return False
            return True

        return super().optgroups(name, [v for v in value if is_key(v)], attr)


class InputCheckedChangeList(ChangeList):
    """Django's changelist, with date-hierarchy values out of range ("?created__year=99999...",
    "?created__year=9999", which has no next year) the same "invalid filter" notice as any other bad
    filter, rather than the ``OverflowError``/``ValueError`` (a 500) that Django lets through."""

    def get_filters(self, request):
        try:
            return super().get_filters(request)
        except (OverflowError, ValueError) as exc:
            raise IncorrectLookupParameters(exc) from exc


class InputCheckedAdminMixin:
    """ModelAdmin mixin: no submitted value or query parameter makes an admin page a 500 (the
    autocomplete widget and the changelist's date hierarchy above)."""

    def get_changelist(self, request, **kwargs):
        return InputCheckedChangeList

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = KeyCheckedAutocompleteSelect(
                db_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class _NotSavedForm:
    """The admin form sent again after a service gave up: invalid, so it is shown as sent (nothing
    typed is lost) and not saved a second time by the same request."""

    def clean(self):
        super().clean()
        raise ValidationError("Nothing was saved: send the form again.")


class ServiceAdminMixin:
    """ModelAdmin mixin for models saved through services that run in ``@service_transaction``.

    Django's admin saves a change form inside a ``transaction.atomic()`` of its own; a service
    opens a durable transaction (retried whole), which refuses to run inside another. So the form
    is saved without the admin's transaction: the service's is the one that matters, and the
    admin's history entry is written once it has committed. When the service gives up because
    other transactions kept its rows through every attempt (``ServiceTransactionFailed``),
    nothing was saved: the form comes back as sent, with a message that says so (HTTP 409)."""

    # False: a new object is a plain save (no service), so the add form keeps Django's own
    # transaction around the row, its related objects and the history entry.
    service_adds = True

    @csrf_protect_m  # as Django's own changeform_view
    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        plain_add = object_id is None and not self.service_adds
        if plain_add or request.method in ("GET", "HEAD", "OPTIONS", "TRACE"):
            return super().changeform_view(request, object_id, form_url, extra_context)
        try:
            return self._changeform_view(request, object_id, form_url, extra_context)
        except ServiceTransactionFailed:
            self.message_user(request, f"Not saved. {BUSY_MESSAGE}", level=messages.ERROR)
            request._service_busy = True
            response = self._changeform_view(request, object_id, form_url, extra_context)
            response.status_code = 409
            return response

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if getattr(request, "_service_busy", False):
            form = type(form.__name__, (_NotSavedForm, form), {})
        return form


class OptimisticLockAdminMixin(ServiceAdminMixin):
    """Changes go through ``optimistic_update`` with the version the editor loaded (a hidden
    ``version`` form field). When someone else saved first, nothing is written and the editor is
    sent back to the form, which shows the current values, with a message that shows both
    versions, field by field: what the row holds now, and what the editor sent (so nothing typed
    is lost), as the site's 409 page does."""

    optimistic_fields: frozenset[str] = frozenset()
    conflict_errors: tuple[type[Exception], ...] = ()
    service_adds = False  # a new row is a plain save (in the admin's transaction); changes are not

    def optimistic_update(self, obj, *, expected_version: int, changes: dict[str, Any]):
        raise NotImplementedError

    def save_model(self, request, obj, form, change):
        if not change:
            super().save_model(request, obj, form, change)
            return
        changes = {
            name: form.cleaned_data[name]
            for name in form.changed_data
            if name in self.optimistic_fields
        }
        expected = form.cleaned_data.get("version") or 0
        try:
            updated = self.optimistic_update(obj, expected_version=expected, changes=changes)
        except self.conflict_errors as exc:
            request._optimistic_conflict = (exc, changes, expected)
        else:
            obj.version = updated.version

    def response_change(self, request, obj):
        conflict = getattr(request, "_optimistic_conflict", None)
        if conflict is not None:
            self.message_user(request, conflict_message(*conflict), level=messages.ERROR)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def log_change(self, request, obj, message):
        if getattr(request, "_optimistic_conflict", None) is None:
            super().log_change(request, obj, message)


def _shown(value, *, limit: int | None = None) -> str:
    if value in (None, ""):
        return "(empty)"
    return Truncator(str(value)).chars(limit) if limit else str(value)


def conflict_message(exc: Exception, changes: dict[str, Any], expected: int):
    """ "Not saved: ..." and a table of each field the editor changed: now, and as sent."""
    current = getattr(exc, "current", None)
    if current is None or not changes:
        return f"Not saved: {exc}"
    opts = current._meta
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td><td>{}</td></tr>",
        (
            # What it holds now is in the form too; what was sent is shown whole, to copy.
            (
                opts.get_field(name).verbose_name,
                _shown(getattr(current, name), limit=80),
                _shown(value),
            )
            for name, value in changes.items()
        ),
    )
    return format_html(
        'Not saved: {} <table class="conflict"><thead><tr><th></th><th>Now (version {})</th>'
        "<th>You sent (from version {})</th></tr></thead><tbody>{}</tbody></table>"
        "The form below shows what it holds now: apply your change again if it still applies.",
        exc,
        current.version,
        expected,
        rows,
    )


class HistoryAdmin(InputCheckedAdminMixin, admin.ModelAdmin):
    """Rows written only by a service, in one transaction with the rest of what it did (a
    transfer and its ledger entries, an order with its lines, stock and payment): shown in the
    admin, never added, edited or deleted there, where none of that would happen."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class _ThrottleRecordsReadOnly(InputCheckedAdminMixin):
    """django-axes' records are evidence: staff may look at them and delete them (which unlocks
    a login), never edit them; a "save" of their read-only form only wrote an admin log entry."""

    def has_change_permission(self, request, obj=None):
        return False


for _model in (AccessAttempt, AccessLog, AccessFailureLog):
    if admin.site.is_registered(_model):
        _registered = type(admin.site.get_model_admin(_model))
        admin.site.unregister(_model)
        admin.site.register(
            _model, type(_registered.__name__, (_ThrottleRecordsReadOnly, _registered), {})
        )
