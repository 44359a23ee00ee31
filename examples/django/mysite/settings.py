"""Settings of the example project.

The database comes from ``DATABASE_URL`` (``uv run horsies db url`` prints one), read once here into
``DATABASES``; horsies builds its own URL from ``DATABASES`` (``mysite.horsies_app``), so the two
always name the same database.
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

_url = conninfo_to_dict(os.environ["DATABASE_URL"])
_keys = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST", "port": "PORT"}

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-horsies-example")
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]

INSTALLED_APPS = ["signups"]
# No CsrfViewMiddleware: the project has no sessions or logins for a forged request to ride on,
# and its API is called by scripts (curl in the README).
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "mysite.urls"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        **{setting: str(_url.get(key) or "") for key, setting in _keys.items()},
        # The URL's other libpq parameters (sslmode=require, ...).
        "OPTIONS": {key: value for key, value in _url.items() if key not in _keys},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# Mail is printed, not sent: the welcome shows up in the worker's output.
EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = "welcome@example.org"
