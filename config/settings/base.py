"""Settings shared by every environment; environment-specific modules import from here."""

from datetime import timedelta
from pathlib import Path

from csp.constants import NONE, SELF

from config.database import database_settings
from config.env import StrictEnv

BASE_DIR = Path(__file__).resolve().parent.parent.parent
env = StrictEnv()

# GENERAL
# ------------------------------------------------------------------------------
DEBUG = env.bool("DJANGO_DEBUG", default=False)
SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY", default="insecure-local-only-key-do-not-use-in-production"
)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False
USE_TZ = True
# One date format for the site and the admin, with the time zone (config/formats/en/formats.py).
FORMAT_MODULE_PATH = ["config.formats"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"


# DATABASES
# ------------------------------------------------------------------------------
# Where the embedded development server keeps its data (manage.py embedded_db reads it too); CI
# points it elsewhere to run the tests on another PostgreSQL major (EMBEDDED_PG_BIN_DIR).
EMBEDDED_PGDATA = Path(env.str("EMBEDDED_PG_DATA", default=str(BASE_DIR / ".pgdata")))


def databases(*, embedded: bool) -> dict:
    """DATABASES from DATABASE_URL. With ``embedded`` (local and test settings only) an unset
    DATABASE_URL starts (or finds) the development server under .pgdata/ instead; production passes
    False, so it refuses to start without DATABASE_URL and never starts a server of its own."""
    embedded_url = embedded_replica_url = None
    if embedded:
        autostart = env.bool("EMBEDDED_PG_AUTOSTART", default=True)

        def embedded_url() -> str:
            from devdb import embedded as server

            return server.database_url(EMBEDDED_PGDATA, autostart=autostart)

        if env.bool("EMBEDDED_PG_REPLICA", default=False):

            def embedded_replica_url() -> str:
                from devdb import embedded as server

                return server.replica_url(EMBEDDED_PGDATA, autostart=autostart)

    return database_settings(
        env.ENVIRON, embedded_url=embedded_url, embedded_replica_url=embedded_replica_url
    )


# Reads to the replica, writes and transactions to the primary, read-your-writes: active only when
# DATABASES has a "replica" (DATABASE_REPLICA_URL); without one it routes nothing.
DATABASE_ROUTERS = ["dbops.routing.ReplicaRouter"]


# Off on purpose: money services open durable transactions, which cannot nest in a request-wide one.
ATOMIC_REQUESTS = False

# DBOPS (the database toolkit: every key, its meaning and its default are in dbops/conf.py)
# ------------------------------------------------------------------------------
# This project's environment variables feed the toolkit's settings; the toolkit reads no variable.
DBOPS = {
    "SLOW_QUERY_MS": env.int("DB_SLOW_QUERY_MS", default=500, minimum=0),
    # Past this replica lag (WAL position and replay progress), every read goes to the primary.
    "REPLICA_MAX_LAG_MS": env.int("DB_REPLICA_MAX_LAG_MS", default=2000, minimum=0),
    # The login throttle's records are read from the primary too: a login must see its own
    # failures at once.
    "PRIMARY_ONLY_APPS": ("sessions", "migrations", "axes"),
    # For the pool-sizing check (dbops.W001): the web workers gunicorn/uvicorn run.
    "WEB_CONCURRENCY": env.int("WEB_CONCURRENCY", default=2, minimum=1),
    # /health/ready shows its details to staff and to probes sending this in X-Health-Token.
    "HEALTH_TOKEN": env.str("HEALTH_TOKEN", default=""),
    # Off: pending migrations are reported, not fatal (between expand and contract they are
    # expected).
    "HEALTH_FAIL_ON_PENDING_MIGRATIONS": env.bool(
        "HEALTH_FAIL_ON_PENDING_MIGRATIONS", default=False
    ),
    # Every service that writes (dbops.service_transaction): how long a statement waits for a
    # row lock before the attempt is retried (and, after the last attempt, a 409 "busy" page).
    "SERVICE_LOCK_TIMEOUT_MS": env.int("DB_SERVICE_LOCK_TIMEOUT_MS", default=2000, minimum=1),
    # manage.py migrate: timeouts by lock level (README: Migrations on big tables).
    "MIGRATION_LOCK_TIMEOUT_MS": env.int("DB_MIGRATION_LOCK_TIMEOUT_MS", default=3000, minimum=1),
    "MIGRATION_LOCK_ATTEMPTS": env.int("DB_MIGRATION_LOCK_ATTEMPTS", default=5, minimum=1),
    "MIGRATION_RETRY_DELAY_MS": env.int("DB_MIGRATION_RETRY_DELAY_MS", default=3000, minimum=0),
    "MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS": env.int(
        "DB_MIGRATION_BLOCKING_STATEMENT_TIMEOUT_MS", default=10_000, minimum=1
    ),
    # 0: a second migrate on the database stops at once, naming the first; N: waits N ms for it.
    "MIGRATE_LOCK_WAIT_MS": env.int("DB_MIGRATE_LOCK_WAIT_MS", default=0, minimum=0),
    # dbops' own migrations up to 0003 predate the deploy-safety rules (dbops.E110-E117): two of
    # their columns have Python-only defaults (E115), applied long ago; not judged again.
    "MIGRATION_SAFETY_BASELINE": {"dbops": "0003_backfillrun_replica_pauses"},
    # /health/metrics (Prometheus text, for staff and the health token).
    "METRICS_ENABLED": env.bool("METRICS_ENABLED", default=True),
    # backfill_column pauses while the server writes WAL faster than this (0: never).
    "BACKFILL_MAX_WAL_BYTES_PER_S": env.int("BACKFILL_MAX_WAL_MB_PER_S", default=0, minimum=0)
    * 2**20,
    # The ledger, partitioned by month (accounts/migrations/0003-0006): manage.py partitions_maintain
    # keeps 3 months ahead; every month stays attached, since a balance is the sum of all its
    # entries (README: "Partitioning the ledger").
    "PARTITIONED_TABLES": {"accounts_ledgerentry": {"interval": "month", "ahead": 3}},
}

# CACHES
# ------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A cache server that stops answering costs a request (and a readiness probe) a
            # second, not the client's default of waiting forever.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# APPS
# ------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "axes",
    "csp",
    "dbops",
    "core",
    "accounts",
    "orders",
]

MIDDLEWARE = [
    # First, so the counts include every query the request runs, middleware included.
    "dbops.middleware.QueryCountMiddleware",
    # Before anything that logs: every log line of the request carries its id (the counter logs
    # nothing; local.py and test.py insert their own after the counter, MIDDLEWARE[0]).
    "config.request_id.RequestIdMiddleware",
    # /health/live answered before anything that may read the database (the session, the user).
    "dbops.middleware.LivenessMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the session, the user or the form data: a NUL byte is a 400 here.
    "core.middleware.RejectNulBytesMiddleware",
    "csp.middleware.CSPMiddleware",
    # Django's, except that a save failing on a lost connection is tried again, then answered with a
    # page that does not claim nothing was done (the view's work has committed by then).
    "dbops.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # After the sessions (it keeps a writer's WAL position there), before anything reads the
    # database for the request: which server serves this request's reads, and a second run of a
    # request that failed for its connection before it wrote anything, when safe to repeat.
    "dbops.middleware.ReplicaRoutingMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # After the authentication middleware: it asks whether a person is logged in.
    "core.middleware.PrivateCacheMiddleware",
    "dbops.middleware.DatabaseUnavailableMiddleware",
    # A view's BadRequest is the site's 400 page (Django's DEBUG page breaks under the CSP).
    "core.middleware.BadRequestPageMiddleware",
    # Last, as django-axes asks: turns a lockout into the lockout page.
    "axes.middleware.AxesMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "config.context_processors.page",
            ],
        },
    },
]

# AUTHENTICATION
# ------------------------------------------------------------------------------
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out username and address before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    # The user is loaded with its customer profile joined, for the navigation (config/auth.py).
    "config.auth.UserWithProfileBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# LOGIN THROTTLING (django-axes; attempts stored in PostgreSQL, shared by every worker)
# ------------------------------------------------------------------------------
AXES_HANDLER = "core.login.LoginThrottleHandler"
# Failures of one username from one address, and of one address over all usernames, in the window.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5, minimum=1)
LOGIN_ADDRESS_FAILURE_LIMIT = env.int("LOGIN_ADDRESS_FAILURE_LIMIT", default=30, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_LOCKOUT_MINUTES", default=15, minimum=1))
# A success clears that username's failures from that address only, never the address's count.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "core.login.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_DISABLE_ACCESS_LOG = True  # failures are what throttling needs; no row per successful login
# Proxies in front of the app that append to X-Forwarded-For (0: use REMOTE_ADDR).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0, minimum=0)

# SECURITY
# ------------------------------------------------------------------------------
CSRF_FAILURE_VIEW = "config.views.csrf_failure"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
# Scripts and styles from this site's static files only: no inline code, no other origin.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# STATIC
# ------------------------------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"

# LOGGING
# ------------------------------------------------------------------------------
# To stderr, each line with its request's id (config/request_id.py). Django's own errors too: by
# default a 500's traceback (logger django.request) goes only to mail_admins, and to the console
# only with DEBUG, so a production server without ADMINS logged nothing.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.request_id.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"}
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",  # stderr
            "formatter": "plain",
            "filters": ["request_id"],
        }
    },
    "loggers": {
        "dbops": {"handlers": ["console"], "level": env.str("DBOPS_LOG_LEVEL", default="WARNING")},
        "django": {"handlers": ["console"], "level": "WARNING"},
        # The app's own warnings (orders.catalog: the cache server did not answer), with their
        # request's id like every other line.
        "orders": {"handlers": ["console"], "level": "WARNING"},
    },
}
