"""Admin edits through a service's optimistic locking: a conflict is a message, never a lost edit."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponseRedirect


class OptimisticLockAdminMixin:
    """Changes go through ``optimistic_update`` with the version the editor loaded (a hidden
    ``version`` form field). When someone else saved first, nothing is written and the editor is
    sent back to the form, which shows the current values, with an error message."""

    optimistic_fields: frozenset[str] = frozenset()
    conflict_errors: tuple[type[Exception], ...] = ()

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
        try:
            updated = self.optimistic_update(
                obj, expected_version=form.cleaned_data.get("version") or 0, changes=changes
            )
        except self.conflict_errors as exc:
            request._optimistic_conflict = exc
        else:
            obj.version = updated.version

    def response_change(self, request, obj):
        conflict = getattr(request, "_optimistic_conflict", None)
        if conflict is not None:
            self.message_user(request, f"Not saved: {conflict}", level=messages.ERROR)
            return HttpResponseRedirect(request.path)
        return super().response_change(request, obj)

    def log_change(self, request, obj, message):
        if getattr(request, "_optimistic_conflict", None) is None:
            super().log_change(request, obj, message)
