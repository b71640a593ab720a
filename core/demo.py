"""Demo data: the logins every app's demo data belongs to, and how apps join ``seed_demo``.

An app contributes to ``manage.py seed_demo`` by giving its AppConfig a ``demo_seeders()`` method
that returns ``DemoSeeder``s; the command finds them through the app registry, in
``INSTALLED_APPS`` order, so this shared layer never imports an app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-pass-2024"
PEOPLE_PASSWORD = "people-pass-2024"
BATCH = 2000

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class DemoSeeder:
    """One count option of ``seed_demo`` (``--<name> N``) and what grows the data set to N."""

    name: str
    default: int
    help: str
    seed: Callable[[int, Progress], int]  # (count, progress) -> rows added


def demo_seeders() -> list[DemoSeeder]:
    return [
        seeder
        for config in apps.get_app_configs()
        if hasattr(config, "demo_seeders")
        for seeder in config.demo_seeders()
    ]


DEMO_USER_DEFAULTS = {"email": "demo@example.com", "is_staff": True, "is_superuser": True}


def demo_reset() -> list[str]:
    """Empty the tables of every app that has demo data, ids starting over, and delete the
    person0001.. logins: what ``seed_demo --reset`` does before seeding afresh. One transaction:
    all of it or nothing. Returns the tables emptied."""
    from django.db import connection, transaction

    tables = [
        model._meta.db_table
        for config in apps.get_app_configs()
        if hasattr(config, "demo_seeders")
        for model in config.get_models()
    ]
    quoted = ", ".join(connection.ops.quote_name(table) for table in tables)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {quoted} RESTART IDENTITY")
        get_user_model().objects.filter(username__regex=r"^person[0-9]{4}$").delete()
    return tables


def demo_user_ensure():
    """The demo staff login, created once; its password is reset to the documented one."""
    user, _ = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME, defaults=DEMO_USER_DEFAULTS
    )
    user.set_password(DEMO_PASSWORD)
    user.save(update_fields=["password"])
    return user


def demo_user_get():
    """The demo login for the seeders, created if missing; its password is left alone (a
    ``seed_demo`` run resets it once, not once per seeder)."""
    user, _ = get_user_model().objects.get_or_create(
        username=DEMO_USERNAME,
        # A callable: hashed only if the login is created here.
        defaults={**DEMO_USER_DEFAULTS, "password": lambda: make_password(DEMO_PASSWORD)},
    )
    return user


def people_ensure(count: int) -> list:
    """Users person0001.. up to ``count``, created in bulk; existing ones are kept."""
    User = get_user_model()
    names = [f"person{i:04d}" for i in range(1, count + 1)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    password = make_password(PEOPLE_PASSWORD)  # hashed once, shared: demo data only
    User.objects.bulk_create(
        [
            User(username=n, email=f"{n}@example.com", password=password)
            for n in names
            if n not in existing
        ],
        batch_size=BATCH,
    )
    return list(User.objects.filter(username__in=names).order_by("username"))
