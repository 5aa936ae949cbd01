"""The worker side: the Celery tasks that run a service's jobs, its heartbeat and registry, and the process handling.

Kept empty on purpose: a forked worker (workers/process/template.py) imports only what it names.
"""
