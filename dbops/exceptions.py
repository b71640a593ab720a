"""The toolkit's exceptions: every error ``dbops`` raises on purpose derives from ``DbopsError``.

``CommandError`` belongs to management commands: a command catches ``DbopsError`` and says what to
do; library code (services, migration operations, middleware) raises these.
"""


class DbopsError(Exception):
    """Root of the toolkit's errors."""
