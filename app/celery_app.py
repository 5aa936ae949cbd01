"""The documented Celery entry point, ``celery -A app.celery_app worker``.

The app itself lives in :mod:`app.core.celery_app`; this module only re-exports it.
"""

from app.core.celery_app import app, celery_app, celery_config

__all__ = ["app", "celery_app", "celery_config"]
