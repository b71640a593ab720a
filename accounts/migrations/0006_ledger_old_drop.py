from django.db import migrations

from dbops.partitioning.operations import DropTableKeptForRollback


class Migration(migrations.Migration):
    """Partitioning the ledger, 4 of 4: drop accounts_ledgerentry_old, the way back. Irreversible.

    On a live system, deploy it in a later release than 0005 (`manage.py migrate accounts 0005`
    first), once the partitioned ledger has served long enough that nobody wants to go back.
    """

    atomic = False

    dependencies = [
        ("accounts", "0005_ledger_swap"),
    ]

    operations = [
        DropTableKeptForRollback("accounts_ledgerentry"),
    ]
