"""dbops: PostgreSQL operations for Django.

The public API is what ``__all__`` names (docs/dbops/api.md says what each is for): import it from
``dbops`` itself, ``from dbops import retry_transaction, lock_timeout``. Everything else, the
modules behind these names included, is internal and may change in any release. Settings name a
few classes by their dotted path (the middleware, the router, the views): those paths are public
too, and listed in api.md.

The names load on first use (PEP 562), so ``import dbops`` in a settings module imports nothing
of Django's ORM, and no model, before the app registry is ready.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# name -> "module:attribute". The order is the order of docs/dbops/api.md.
_PUBLIC = {
    # Transactions, retries, timeouts
    "retry_transaction": "dbops.retry:retry_transaction",
    "call_with_retries": "dbops.retry:call_with_retries",
    "RetryInsideTransaction": "dbops.retry:RetryInsideTransaction",
    "lock_timeout": "dbops.timeouts:lock_timeout",
    "statement_timeout": "dbops.timeouts:statement_timeout",
    "transaction_timeouts": "dbops.timeouts:transaction_timeouts",
    "service_transaction": "dbops.transactions:service_transaction",
    "ServiceTransactionFailed": "dbops.transactions:ServiceTransactionFailed",
    # Migration operations
    "AddIndexConcurrently": "dbops.operations:AddIndexConcurrently",
    "RemoveIndexConcurrently": "dbops.operations:RemoveIndexConcurrently",
    "AddUniqueConstraintConcurrently": "dbops.operations:AddUniqueConstraintConcurrently",
    "AddForeignKeyNotValid": "dbops.operations:AddForeignKeyNotValid",
    "ValidateConstraintWithLockTimeout": "dbops.operations:ValidateConstraintWithLockTimeout",
    "SetNotNullPhased": "dbops.operations:SetNotNullPhased",
    "SafeRemoveField": "dbops.operations:SafeRemoveField",
    "SafeDeleteModel": "dbops.operations:SafeDeleteModel",
    "RequireNoNulls": "dbops.operations:RequireNoNulls",
    "RequireBackfillFinished": "dbops.backfill.gate:RequireBackfillFinished",
    "CreatePartitionedCopy": "dbops.partitioning.operations:CreatePartitionedCopy",
    "SyncToPartitionedCopy": "dbops.partitioning.operations:SyncToPartitionedCopy",
    "CopyRowsToPartitionedCopy": "dbops.partitioning.operations:CopyRowsToPartitionedCopy",
    "VerifyPartitionedCopy": "dbops.partitioning.operations:VerifyPartitionedCopy",
    "SwapPartitionedCopy": "dbops.partitioning.operations:SwapPartitionedCopy",
    "DropTableKeptForRollback": "dbops.partitioning.operations:DropTableKeptForRollback",
    "AddIndexOnPartitions": "dbops.partitioning.operations:AddIndexOnPartitions",
    # Backfills from code
    "BackfillOptions": "dbops.backfill.options:BackfillOptions",
    "Value": "dbops.backfill.options:Value",
    "FromField": "dbops.backfill.options:FromField",
    "Expression": "dbops.backfill.options:Expression",
    "plan_build": "dbops.backfill.plan:plan_build",
    "run_backfill": "dbops.backfill.engine:backfill",
    "run_pause": "dbops.backfill.control:run_pause",
    "run_resume": "dbops.backfill.control:run_resume",
    "run_cancel": "dbops.backfill.control:run_cancel",
    "BackfillRun": "dbops.models:BackfillRun",
    "BackfillStatus": "dbops.models:BackfillStatus",
    # Connections and queries
    "pgbouncer_profile": "dbops.pooling:pgbouncer_profile",
    "prepared_statements": "dbops.pooling:prepared_statements",
    "track_queries": "dbops.instrumentation:track_queries",
    "QueryStats": "dbops.instrumentation:QueryStats",
    "AnyOf": "dbops.statements:AnyOf",
    "CompiledSelect": "dbops.statements:CompiledSelect",
    "CompiledUpdate": "dbops.statements:CompiledUpdate",
    "insert_sql": "dbops.statements:insert_sql",
    # Errors
    "DbopsError": "dbops.exceptions:DbopsError",
    "MigrationBlocked": "dbops.exceptions:MigrationBlocked",
    "MigrationLockTimeout": "dbops.exceptions:MigrationLockTimeout",
    "MigrationStatementTooLong": "dbops.exceptions:MigrationStatementTooLong",
    "MigrateAlreadyRunning": "dbops.exceptions:MigrateAlreadyRunning",
    "DirectConnectionRequired": "dbops.exceptions:DirectConnectionRequired",
    "OperationNotSupported": "dbops.exceptions:OperationNotSupported",
    "BackfillError": "dbops.backfill.plan:BackfillError",
    "BackfillCancelled": "dbops.backfill.engine:BackfillCancelled",
    "BackfillControlError": "dbops.backfill.control:BackfillControlError",
    "PartitioningError": "dbops.partitioning.ranges:PartitioningError",
    "sqlstate": "dbops.errors:sqlstate",
    "error_text": "dbops.errors:error_text",
    "constraint_name": "dbops.errors:constraint_name",
    # Settings
    "dbops_settings": "dbops.conf:dbops_settings",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    try:
        module, _, attribute = _PUBLIC[name].partition(":")
    except KeyError:
        raise AttributeError(f"module 'dbops' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # found once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
