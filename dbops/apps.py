from django.apps import AppConfig


class DbopsConfig(AppConfig):
    name = "dbops"
    verbose_name = "Database operations"
    # dbops's migrations create BigAutoField keys: fixed here, so a project's DEFAULT_AUTO_FIELD
    # (AutoField in projects older than Django 3.2) never asks makemigrations for a dbops migration.
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from dbops import checks  # noqa: F401  (registers the system checks)
        from dbops.instrumentation import instrument
        from dbops.partitioning.maintain import create_ahead_after_migrate
        from dbops.routing import observe_connection

        # Every connection object, in every thread, carries the query counter's wrapper.
        connection_created.connect(instrument, dispatch_uid="dbops.instrumentation.instrument")
        # ... and the router's observer of writes on the primary and failures on the replica.
        connection_created.connect(observe_connection, dispatch_uid="dbops.routing.observe")
        # Every migrate also creates the partitions missing ahead (DBOPS["PARTITIONED_TABLES"]).
        post_migrate.connect(create_ahead_after_migrate, sender=self)
