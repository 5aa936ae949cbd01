"""The bottom layer: settings, Redis and broker connections, the Celery app, specs, the key layout.

Imports nothing above it."""
