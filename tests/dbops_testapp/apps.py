from django.apps import AppConfig


class DbopsTestappConfig(AppConfig):
    name = "tests.dbops_testapp"
    label = "dbops_testapp"
    default_auto_field = "django.db.models.BigAutoField"
