"""The ledger's indexes, built partition by partition (``AddIndexOnPartitions``) on the real
partitioned ``accounts_ledgerentry``. The operation itself: tests/dbops/test_partitioning.py."""

from __future__ import annotations

import pytest
from django.db import connection, models
from django.db.migrations.loader import MigrationLoader

from accounts.models import LedgerEntry
from dbops import catalog as dbops_catalog
from dbops.partitioning import catalog
from dbops.partitioning import operations as ops
from dbops.partitioning.indexes import child_index_name
from tests.helpers import statements_run

pytestmark = pytest.mark.django_db(transaction=True)


def sql(statement: str, params=()) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


LEDGER_INDEX = models.Index(fields=["account", "created_at"], name="test_ledger_account_time")


def test_index_on_partitions_builds_each_concurrently_attaches_it_and_resumes():
    table = LedgerEntry._meta.db_table
    op = ops.AddIndexOnPartitions("ledgerentry", LEDGER_INDEX)
    state_before = MigrationLoader(connection).project_state()
    state_after = state_before.clone()
    op.state_forwards("accounts", state_after)
    parts = catalog.partitions(connection, table)
    # As if a run stopped after the first partition: resumes with the others.
    sql(f"CREATE INDEX test_ledger_account_time ON ONLY {table} (account_id, created_at)")
    first = child_index_name(parts[0].name, LEDGER_INDEX.name)
    sql(f"CREATE INDEX {first} ON {parts[0].name} (account_id, created_at)")
    sql(f"ALTER INDEX test_ledger_account_time ATTACH PARTITION {first}")
    try:
        with statements_run() as statements, connection.schema_editor(atomic=False) as editor:
            op.database_forwards("accounts", editor, state_before, state_after)
        builds = [s for s in statements if s.startswith("CREATE INDEX")]
        assert len(builds) == len(parts) - 1
        assert all("CONCURRENTLY" in s for s in builds)
        assert dbops_catalog.invalid_indexes() == []
    finally:
        with connection.schema_editor(atomic=False) as editor:
            op.database_backwards("accounts", editor, state_after, state_before)
    assert "test_ledger_account_time" not in {i.name for i in catalog.indexes(connection, table)}
