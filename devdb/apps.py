from django.apps import AppConfig


class DevdbConfig(AppConfig):
    """The embedded development PostgreSQL: in local and test settings only, never in production."""

    name = "devdb"
    verbose_name = "Embedded development database"
