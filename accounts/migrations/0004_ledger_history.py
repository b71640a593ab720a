from django.db import migrations

from dbops.partitioning.operations import CopyRowsToPartitionedCopy, VerifyPartitionedCopy


class Migration(migrations.Migration):
    """Partitioning the ledger, 2 of 4: the history copied in batches (a dbops.BackfillRun, in the
    admin; a run that is killed resumes when migrate runs again), then verified month by month.

    atomic = False: every batch commits with its checkpoint.
    """

    atomic = False

    dependencies = [
        ("accounts", "0003_ledger_partitioned_copy"),
        ("dbops", "0004_backfill_control"),
    ]

    operations = [
        CopyRowsToPartitionedCopy("accounts_ledgerentry"),
        VerifyPartitionedCopy("accounts_ledgerentry", "created_at", sums=["amount"]),
    ]
