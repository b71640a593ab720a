"""Settings for benchmark servers: the project plus a one-query view (bench/urls.py).

Run as ``DJANGO_SETTINGS_MODULE=bench.site gunicorn config.wsgi``. The benchmarks set
DATABASE_URL to the throwaway server they start; nothing embedded starts from these settings.
"""

from config.settings.base import *  # noqa: F403
from config.settings.base import databases

DEBUG = False
ROOT_URLCONF = "bench.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
DATABASES = databases(embedded=False)
