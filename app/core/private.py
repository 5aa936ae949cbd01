"""Private data: every scalejob process creates its files for its own user only.

Why: the data dir holds the embedded Redis's AOF (every token, payload, result and log line),
worker logs and storage dirs. With the default umask 022 they were world-readable, so any local
user could read every tenant's data. ``restrict()`` runs first thing in every scalejob process
(the CLI, and a Celery worker started with ``celery -A app.celery_app worker``); children (the
embedded Redis, workers, commands) inherit the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077


def restrict() -> None:
    """Files 0600, directories 0700 from now on, in this process and its children."""
    os.umask(UMASK)


def exposure(path: Path) -> str | None:
    """A warning when ``path`` (an existing data dir) can be read or entered by group or others, else None."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return (f"data dir {path} is accessible to other users (mode {stat.filemode(mode)}): "
                f"it holds tokens, payloads and results; run `chmod -R go-rwx {path}`")
    return None
