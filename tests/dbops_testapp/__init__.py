"""A small Django app with what the toolkit's own tests need: tables keyed by an integer, a UUID
(UUIDv7-ordered) and a composite primary key; a parent and its children that people own, edit and
take stock from; the pages tests/dbops requests (urls.py). Installed by config/settings/test.py
only; it knows nothing of the project's apps (tests/test_toolkit_independence.py), so it moves
with the toolkit."""
