"""Demo data for the accounts app; seed_demo calls it."""

from django.contrib.auth import get_user_model

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-pass-2024"


def demo_user_ensure():
    """The demo staff login, created once; its password is reset to the documented one."""
    User = get_user_model()
    user, _ = User.objects.get_or_create(
        username=DEMO_USERNAME,
        defaults={"email": "demo@example.com", "is_staff": True, "is_superuser": True},
    )
    user.set_password(DEMO_PASSWORD)
    user.save(update_fields=["password"])
    return user
