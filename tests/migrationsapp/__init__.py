"""A test-only app whose migrations run Django's operations and dbops' through ``manage.py migrate``.

It has no models module: its one table exists in the migration state only, so the test database
flush between tests leaves the rows of the big-table tests alone (tests/dbops/test_migrations_at_scale.py).
Installed by the test settings only.
"""
