"""Resumable, batched column backfills: ``manage.py backfill_column`` is a thin shell over this."""

from dbops.backfill.control import (
    BackfillControlError,
    command_line,
    run_cancel,
    run_pause,
    run_resume,
)
from dbops.backfill.engine import BackfillCancelled, Progress, backfill
from dbops.backfill.options import BackfillOptions, Expression, FromField, Value
from dbops.backfill.plan import BackfillError, BackfillPlan, plan_build, plan_check, rows_to_fill

__all__ = [
    "BackfillCancelled",
    "BackfillControlError",
    "BackfillError",
    "BackfillOptions",
    "BackfillPlan",
    "Expression",
    "FromField",
    "Progress",
    "Value",
    "backfill",
    "command_line",
    "plan_build",
    "plan_check",
    "rows_to_fill",
    "run_cancel",
    "run_pause",
    "run_resume",
]
