"""The toolkit's exceptions: every error ``dbops`` raises on purpose derives from ``DbopsError``.

``CommandError`` belongs to management commands: a command catches ``DbopsError`` and says what to
do (``manage.py migrate`` turns one into a one-line message, no traceback); library code (services,
migration operations, the migration guard, middleware) raises these.
"""


class DbopsError(Exception):
    """Root of the toolkit's errors."""


class DirectConnectionRequired(DbopsError):
    """This work needs a session of its own; the message names the direct connection to use."""


class MigrationBlocked(DbopsError):
    """The migration cannot go on yet; the message says what to run or do first."""


class MigrationLockTimeout(MigrationBlocked):
    """A migration statement could not get its lock in its attempts; the message names the
    sessions in the way (``pg_blocking_pids``) and what to do."""


class MigrationStatementTooLong(MigrationBlocked):
    """A statement holding a lock that blocks reads or writes ran past the migration bound."""


class MigrateAlreadyRunning(DbopsError):
    """Another ``migrate`` holds this database's migration lock; the message names it."""


class OperationNotSupported(DbopsError):
    """The database server cannot do what the operation was asked (e.g. its version)."""
