from django.apps import AppConfig


class MigrationsAppConfig(AppConfig):
    name = "tests.migrationsapp"
    label = "migrationsapp"
    default_auto_field = "django.db.models.BigAutoField"
