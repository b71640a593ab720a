from django.apps import AppConfig


class CoreConfig(AppConfig):
    """What the apps share: money, domain errors, versioned updates, idempotency keys, paging, demo
    data. It sits between the apps and ``dbops`` and imports neither app."""

    name = "core"
    verbose_name = "Shared domain"
