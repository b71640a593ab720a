from django.db import models
from django.db.models import Q


class BackfillStatus(models.TextChoices):
    RUNNING = "running", "Running"  # or killed: a new run of the same command resumes it
    FAILED = "failed", "Failed"  # stopped with an error; the same command resumes it
    DONE = "done", "Done"
    ABANDONED = "abandoned", "Abandoned"  # replaced by a run started with --restart


class BackfillRun(models.Model):
    """One run of ``manage.py backfill_column`` and its checkpoint.

    ``last_pk`` moves forward in the same transaction as each batch's UPDATE, so after a crash or
    kill the checkpoint names exactly the rows done: the next run resumes after it, and no row is
    updated twice. At most one unfinished run per target and database.
    """

    target = models.CharField(max_length=300, help_text="app_label.Model.field")
    database = models.CharField(max_length=100, default="default")
    options = models.JSONField(help_text="what the run writes and where: a resumed run must match")
    status = models.CharField(
        max_length=10, choices=BackfillStatus.choices, default=BackfillStatus.RUNNING
    )
    last_pk = models.BigIntegerField(
        null=True, blank=True, help_text="every row up to here is done"
    )
    max_pk = models.BigIntegerField(
        null=True, blank=True, help_text="the largest primary key when the run began"
    )
    rows_done = models.BigIntegerField(default=0)
    batches = models.IntegerField(default=0)
    batch_size = models.IntegerField(default=0)
    retries = models.IntegerField(default=0)
    splits = models.IntegerField(default=0)
    longest_batch_ms = models.FloatField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    # One run per target at a time (dbops/backfill/lease.py): no session-level advisory lock, so
    # a run behind PgBouncer in transaction mode leaves nothing on a pooled server connection.
    lease_owner = models.CharField(
        max_length=200, blank=True, default="", help_text="host:pid:token of the running command"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # Pauses between batches while the replica lagged (backfill_column --max-replica-lag-ms).
    replica_pauses = models.IntegerField(default=0)
    replica_paused_s = models.FloatField(default=0)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["database", "target"],
                condition=Q(status__in=["running", "failed"]),
                name="backfillrun_one_unfinished_per_target",
            )
        ]

    def __str__(self):
        return f"{self.target} #{self.pk} ({self.status})"
