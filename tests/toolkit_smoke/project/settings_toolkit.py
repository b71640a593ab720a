# --- django-dbops, as its installation guide says (appended by tests/toolkit_smoke/run.py) --------
# Nothing else of startproject's settings changes: no DBOPS dict, no template directory.
from devdb import embedded  # noqa: E402  (the django-dbops[devdb] extra)

INSTALLED_APPS += ["dbops", "devdb", "shop"]  # noqa: F821
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# What a project started before Django 3.2 has: dbops's migrations must not depend on it.
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
# The embedded PostgreSQL 18 under .pgdata/, and a streaming hot standby of it as the replica.
DATABASES = {
    "default": embedded.django_database(BASE_DIR / ".pgdata"),  # noqa: F821
    "replica": {
        **embedded.django_database(BASE_DIR / ".pgdata", replica=True),  # noqa: F821
        "TEST": {"MIRROR": "default"},
    },
}
DATABASE_ROUTERS = ["dbops.routing.ReplicaRouter"]
MIDDLEWARE = ["dbops.middleware.QueryCountMiddleware", *MIDDLEWARE]  # noqa: F821
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware"),
    "dbops.middleware.ReplicaRoutingMiddleware",
)
MIDDLEWARE.append("dbops.middleware.DatabaseUnavailableMiddleware")
