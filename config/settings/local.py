"""Development: DEBUG on, the debug toolbar's SQL panel on every page."""

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
INTERNAL_IPS = ["127.0.0.1"]

INSTALLED_APPS = [*INSTALLED_APPS, "debug_toolbar"]
# After the query counter, so the counter sees the toolbar's own queries too.
MIDDLEWARE = [MIDDLEWARE[0], "debug_toolbar.middleware.DebugToolbarMiddleware", *MIDDLEWARE[1:]]
DEBUG_TOOLBAR_CONFIG = {"SHOW_COLLAPSED": True}
