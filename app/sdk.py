"""The documented SDK import path: ``from app.sdk import QueueClient`` (the client lives in :mod:`app.eas.client`)."""

from app.eas.client import QueueClient

__all__ = ["QueueClient"]
