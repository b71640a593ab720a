"""A small Django app with the models the toolkit's own tests need: tables keyed by an integer, a
UUID (UUIDv7-ordered) and a composite primary key. Installed by config/settings/test.py only; it
knows nothing of the project's apps, so it moves with the toolkit."""
