"""scalejob's service side: settings, Redis and Celery wiring, the queues, the HTTP API, the dashboard and the CLI.

Kept empty on purpose: ``celery -A app.celery_app`` and ``python -m app.cli`` import only what they name.
"""
