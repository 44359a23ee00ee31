"""What a worker loads: ``manage.py horsies_worker``, or ``horsies worker
mysite.worker:app``.

A worker's main process and each of its children start as fresh interpreters that import this
module first; the tasks use the ORM, so Django is set up here, before the app and its task
modules are imported. Where Django is already set up (``manage.py horsies_worker``'s own
process), this changes nothing.
"""

from __future__ import annotations

import os

import django
from django.apps import apps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
if not apps.ready:
    django.setup()

# The app needs Django's settings (named above); the task modules the worker imports next use the
# models, which need the app registry (set up above).
from mysite.horsies_app import app

__all__ = ["app"]
