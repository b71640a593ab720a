"""Development: DEBUG on, the debug toolbar's SQL panel on every page, N+1 warnings."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, databases, env
from .nplusone import *  # noqa: F403

DEBUG = env.bool("DJANGO_DEBUG", default=True)
INTERNAL_IPS = ["127.0.0.1"]

DATABASES = databases(embedded=True)
INSTALLED_APPS = [*INSTALLED_APPS, "devdb", "debug_toolbar", "zeal"]
# After the query counter, so the counter sees the toolbar's own queries too, and after the
# liveness answer, which must not depend on anything that reads the database.
_FIRST = MIDDLEWARE.index("dbops.middleware.LivenessMiddleware") + 1
MIDDLEWARE = [
    *MIDDLEWARE[:_FIRST],
    "debug_toolbar.middleware.DebugToolbarMiddleware",
    "zeal.middleware.zeal_middleware",
    *MIDDLEWARE[_FIRST:],
]
# The toolbar shows the session and the templates' context (the user), both read from the
# database: while it is unreachable the toolbar steps aside, and the page is the plain 503.
DEBUG_TOOLBAR_CONFIG = {
    "SHOW_COLLAPSED": True,
    "SHOW_TOOLBAR_CALLBACK": "config.toolbar.show_toolbar",
}
# The Content-Security-Policy of base.py holds here too: the toolbar (5.0 and later) loads its code
# as module scripts and its styles as stylesheets from STATIC_URL ('self'), sets styles from its
# script (which style-src does not govern), and adds django-csp's nonce to its tags when a page
# uses one. No 'unsafe-inline' is needed (tests/core/test_middleware.py checks the toolbar's HTML;
# Chromium reports no violation from it).

# N+1 DETECTION (django-zeal): the tests' threshold and allowlist, but a warning naming the file
# and line instead of an error. Exploring the app with `make run` should not turn a page into a
# traceback; the test suite, where zeal raises, is what refuses an N+1.
ZEAL_RAISE = False
