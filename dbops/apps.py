from django.apps import AppConfig


class DbopsConfig(AppConfig):
    name = "dbops"
    verbose_name = "Database operations"

    def ready(self):
        from django.db.backends.signals import connection_created

        from dbops import checks  # noqa: F401  (registers the system checks)
        from dbops.instrumentation import instrument
        from dbops.routing import observe_connection

        # Every connection object, in every thread, carries the query counter's wrapper.
        connection_created.connect(instrument, dispatch_uid="dbops.instrumentation.instrument")
        # ... and the router's observer of writes on the primary and failures on the replica.
        connection_created.connect(observe_connection, dispatch_uid="dbops.routing.observe")
