from datetime import timedelta

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone

from dbops.backfill import control
from dbops.backfill.throttle import INDICATORS
from dbops.models import BackfillRun

CONTROL_PERMISSION = "dbops.control_backfillrun"
ACTIONS = {
    "pause": (control.run_pause, "Paused"),
    "resume": (control.run_resume, "Resumed"),
    "cancel": (control.run_cancel, "Cancelled"),
}


def progress_text(run: BackfillRun) -> str:
    fraction = run.fraction
    if fraction is None:
        return "unknown"
    return f"{fraction:.0%}"


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    """Runs of ``backfill_column``: read-only records, steered by pause, resume and cancel (a
    permission of its own, ``dbops.control_backfillrun``) from the list or from a run's page,
    which shows its progress, rate, ETA, pauses with their reasons, errors and history."""

    list_display = [
        "id",
        "target",
        "database",
        "status",
        "progress",
        "rows_done",
        "rate_display",
        "batches",
        "started_at",
        "updated_at",
    ]
    list_filter = ["status", "database"]
    search_fields = ["target"]
    readonly_fields = [f.name for f in BackfillRun._meta.fields]
    actions = ["pause_selected", "resume_selected", "cancel_selected"]
    change_form_template = "admin/dbops/backfillrun/change_form.html"

    class Media:
        css = {"all": ["dbops/backfill.css"]}

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_control_permission(self, request):
        return request.user.has_perm(CONTROL_PERMISSION)

    @admin.display(description="progress")
    def progress(self, run):
        return progress_text(run)

    @admin.display(description="rows/s", ordering="rate")
    def rate_display(self, run):
        return f"{run.rate:,.0f}"

    # -- steering ------------------------------------------------------------------------
    def _steer(self, request, run_ids, action: str) -> None:
        act, done = ACTIONS[action]
        reason = request.POST.get("reason", "")[:500]
        for run_id in run_ids:
            try:
                run = act(run_id=run_id, actor=request.user.get_username(), reason=reason)
            except control.BackfillControlError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, self._steered_message(run, done), messages.SUCCESS)

    @staticmethod
    def _steered_message(run: BackfillRun, done: str) -> str:
        text = f"{done} run #{run.pk} ({run.target})."
        running = run.lease_owner and run.lease_expires_at and run.lease_expires_at > timezone.now()
        if done == "Resumed" and not running:
            text += f" No command is running it: run `{control.command_line(run)}` to go on."
        elif done != "Resumed" and running:
            text += " Its command obeys after the batch in flight."
        return text

    @admin.action(description="Pause the selected runs", permissions=["control"])
    def pause_selected(self, request, queryset):
        self._steer(request, queryset.values_list("pk", flat=True), "pause")

    @admin.action(description="Resume the selected runs", permissions=["control"])
    def resume_selected(self, request, queryset):
        self._steer(request, queryset.values_list("pk", flat=True), "resume")

    @admin.action(description="Cancel the selected runs", permissions=["control"])
    def cancel_selected(self, request, queryset):
        self._steer(request, queryset.values_list("pk", flat=True), "cancel")

    def get_urls(self):
        control_url = path(
            "<int:object_id>/control/<str:action>/",
            self.admin_site.admin_view(self.control_view),
            name="dbops_backfillrun_control",
        )
        return [control_url, *super().get_urls()]

    def control_view(self, request, object_id: int, action: str):
        """The buttons of a run's page: POST (with the CSRF token) only, with the permission."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if action not in ACTIONS or not self.has_control_permission(request):
            raise PermissionDenied
        run = get_object_or_404(BackfillRun, pk=object_id)
        self._steer(request, [run.pk], action)
        return HttpResponseRedirect(reverse("admin:dbops_backfillrun_change", args=[run.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if run is not None:
            extra.update(self._run_context(request, run))
        return super().change_view(request, object_id, form_url, extra_context=extra)

    def _run_context(self, request, run: BackfillRun) -> dict:
        eta_at = None
        if run.eta_s is not None and run.unfinished:
            eta_at = run.updated_at + timedelta(seconds=run.eta_s)
        pauses = [
            {"indicator": name.replace("_", " "), **run.pauses[name]}
            for name in INDICATORS
            if name in run.pauses
        ]
        can = self.has_control_permission(request)
        allowed = {
            action: can and run.status in control.TRANSITIONS[action][0] for action in ACTIONS
        }
        return {
            "run": run,
            "progress_percent": None if run.fraction is None else round(run.fraction * 100, 1),
            "eta_at": eta_at,
            "pauses": pauses,
            "events": list(run.events.all()),
            "allowed": allowed,
            "can_control": can,
            "command": control.command_line(run),
            "lease_live": bool(
                run.lease_owner and run.lease_expires_at and run.lease_expires_at > timezone.now()
            ),
        }
