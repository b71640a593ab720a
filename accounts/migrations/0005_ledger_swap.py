from django.db import migrations

from dbops.partitioning.operations import SwapPartitionedCopy


class Migration(migrations.Migration):
    """Partitioning the ledger, 3 of 4: the partitioned copy becomes accounts_ledgerentry in one
    short transaction under lock_timeout (retried); the plain table stays, as
    accounts_ledgerentry_old, kept in step by the trigger turned around: reversing this migration
    swaps back. Its unique constraint on (account, idempotency_key) stays with the old table;
    LedgerKey keeps that guarantee for the partitioned one.
    """

    atomic = False

    dependencies = [
        ("accounts", "0004_ledger_history"),
    ]

    operations = [
        SwapPartitionedCopy("accounts_ledgerentry"),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveConstraint(
                    model_name="ledgerentry", name="ledger_idempotency_key_per_account"
                ),
            ],
        ),
    ]
