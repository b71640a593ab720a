"""Resumable, batched column backfills: ``manage.py backfill_column`` is a thin shell over this."""

from dbops.backfill.engine import Progress, backfill
from dbops.backfill.options import BackfillOptions, Expression, FromField, Value
from dbops.backfill.plan import BackfillError, BackfillPlan, plan_build, plan_check, rows_to_fill

__all__ = [
    "BackfillError",
    "BackfillOptions",
    "BackfillPlan",
    "Expression",
    "FromField",
    "Progress",
    "Value",
    "backfill",
    "plan_build",
    "plan_check",
    "rows_to_fill",
]
