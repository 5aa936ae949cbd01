"""Benchmarks: each module runs scalejob and a plain-Celery baseline side by side in one run.

Run one with ``python -m benchmarks.<name>``; each module's ``run()`` returns its figures as a dict.
"""
