from django.apps import AppConfig


class DbopsConfig(AppConfig):
    name = "dbops"
    verbose_name = "Database operations"

    def ready(self):
        from dbops import checks  # noqa: F401  (registers the system checks)
