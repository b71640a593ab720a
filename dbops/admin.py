from django.contrib import admin

from dbops.models import BackfillRun


@admin.register(BackfillRun)
class BackfillRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "target",
        "database",
        "status",
        "rows_done",
        "last_pk",
        "max_pk",
        "batches",
        "started_at",
        "updated_at",
    ]
    list_filter = ["status", "database"]
    search_fields = ["target"]
    readonly_fields = [f.name for f in BackfillRun._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
