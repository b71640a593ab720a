from django.db import models
from django.db.models import Q


class BackfillStatus(models.TextChoices):
    RUNNING = "running", "Running"  # or killed: a new run of the same command resumes it
    PAUSED = "paused", "Paused"  # by a person: a command waits until someone resumes it
    FAILED = "failed", "Failed"  # stopped with an error; the same command resumes it
    DONE = "done", "Done"
    CANCELLED = "cancelled", "Cancelled"  # stopped by a person; kept with its checkpoint
    ABANDONED = "abandoned", "Abandoned"  # replaced by a run started with --restart


# A run in one of these may still write: at most one per target and database.
UNFINISHED = (BackfillStatus.RUNNING, BackfillStatus.PAUSED, BackfillStatus.FAILED)


class BackfillRun(models.Model):
    """One run of ``manage.py backfill_column`` and its checkpoint.

    ``last_key`` moves forward in the same transaction as each batch's UPDATE, so after a crash or
    kill the checkpoint names exactly the rows done: the next run resumes after it, and no row is
    updated twice. It holds the primary key's columns as PostgreSQL writes them as text (one
    element per column), so any key fits: an integer, a UUID, a composite key. At most one
    unfinished run per target and database. ``status`` is also how a person steers the run from
    the admin (pause, resume, cancel): the command reads it back with every batch.
    """

    target = models.CharField(max_length=300, help_text="app_label.Model.field")
    database = models.CharField(max_length=100, default="default")
    options = models.JSONField(help_text="what the run writes and where: a resumed run must match")
    status = models.CharField(
        max_length=10, choices=BackfillStatus.choices, default=BackfillStatus.RUNNING
    )
    last_key = models.JSONField(
        null=True,
        blank=True,
        help_text="every row up to this primary key is done (its columns, as text)",
    )
    rows_done = models.BigIntegerField(default=0, help_text="rows filled")
    keys_scanned = models.BigIntegerField(
        default=0, db_default=0, help_text="rows visited, filled or not"
    )
    rows_estimate = models.BigIntegerField(
        null=True,
        blank=True,
        help_text="rows in the table when the run began (the planner's count)",
    )
    rate = models.FloatField(default=0, db_default=0, help_text="rows filled per second, lately")
    eta_s = models.FloatField(null=True, blank=True, help_text="seconds left, at updated_at")
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
    # The pauses the database's health asked for, per indicator (dbops/backfill/throttle.py):
    # {"replica_lag": {"count": 2, "seconds": 3.5, "last": "replica 2500 ms behind"}, ...}
    pauses = models.JSONField(default=dict, db_default={}, blank=True)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["database", "target"],
                condition=Q(status__in=["running", "paused", "failed"]),
                name="backfillrun_one_unfinished_per_target",
            )
        ]
        permissions = [("control_backfillrun", "Can pause, resume and cancel backfill runs")]

    def __str__(self):
        return f"{self.target} #{self.pk} ({self.status})"

    @property
    def unfinished(self) -> bool:
        return self.status in UNFINISHED

    @property
    def fraction(self) -> float | None:
        """Of the table's rows visited so far (``rows_estimate`` is the planner's count)."""
        if self.status == BackfillStatus.DONE:
            return 1.0
        if not self.rows_estimate:
            return None
        return min(1.0, self.keys_scanned / max(self.rows_estimate, 1))

    @property
    def rows_left(self) -> int | None:
        """About how many rows are still to visit."""
        if self.status == BackfillStatus.DONE:
            return 0
        if self.rows_estimate is None:
            return None
        return max(0, self.rows_estimate - self.keys_scanned)


class BackfillEvent(models.Model):
    """Who did what to a run, and when: a person's pause, resume or cancel (from the admin), and
    the command's answer to each (it paused after batch N...). Kept with the run."""

    class Action(models.TextChoices):
        START = "start", "started"
        PAUSE = "pause", "pause"
        RESUME = "resume", "resume"
        CANCEL = "cancel", "cancel"
        PAUSED = "paused", "paused"
        RESUMED = "resumed", "resumed"
        STOPPED = "stopped", "stopped"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    run = models.ForeignKey(BackfillRun, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True)
    actor = models.CharField(
        max_length=200, help_text="a person's username, or the command's host:pid"
    )
    action = models.CharField(max_length=10, choices=Action.choices)
    note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["at", "pk"]

    def __str__(self):
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action}"
