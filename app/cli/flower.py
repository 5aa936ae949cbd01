"""``scalejob flower``: Flower (the Celery dashboard) for scalejob's workers, password-protected.

Flower shows every worker and task of the broker and can shut workers down or revoke tasks,
so it never starts open by accident: basic auth comes from ``SCALEJOB_FLOWER_USER`` /
``SCALEJOB_FLOWER_PASSWORD`` or Flower's own ``FLOWER_BASIC_AUTH`` (``user:password[,..]``),
and without credentials it refuses to start unless ``--insecure`` is given. Credentials reach
Flower through its environment (``FLOWER_BASIC_AUTH``), never its command line, so they do
not show up in ``ps``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

CONFIG = Path(__file__).with_name("flowerconfig.py")


class FlowerAuthMissing(RuntimeError):
    """No credentials and no ``--insecure``."""


@dataclass(frozen=True)
class FlowerCommand:
    argv: list[str]
    env: dict[str, str]


def basic_auth(env: dict[str, str]) -> str | None:
    """``user:password`` from the scalejob variables, else Flower's ``FLOWER_BASIC_AUTH``."""
    user, password = env.get("SCALEJOB_FLOWER_USER", ""), env.get("SCALEJOB_FLOWER_PASSWORD", "")
    if user and password:
        if ":" in user or "," in user or "," in password:
            raise FlowerAuthMissing(
                "SCALEJOB_FLOWER_USER may not contain ':' or ',' and the password may not contain ','"
            )
        return f"{user}:{password}"
    if user or password:
        raise FlowerAuthMissing("set both SCALEJOB_FLOWER_USER and SCALEJOB_FLOWER_PASSWORD")
    return env.get("FLOWER_BASIC_AUTH") or None


def build(address: str, port: int, insecure: bool, broker_url: str, env: dict[str, str] | None = None) -> FlowerCommand:
    """The Flower command line and environment for this configuration."""
    env = dict(os.environ if env is None else env)
    auth = basic_auth(env)
    if auth is None and not insecure:
        raise FlowerAuthMissing(
            "Flower needs credentials: set SCALEJOB_FLOWER_USER and SCALEJOB_FLOWER_PASSWORD "
            "(or FLOWER_BASIC_AUTH=user:password), or pass --insecure to run it without a login"
        )
    env.pop("FLOWER_BASIC_AUTH", None)
    if auth is not None:
        env["FLOWER_BASIC_AUTH"] = auth
    env["SCALEJOB_BROKER_URL"] = broker_url  # by env, not argv: a URL may carry a password
    argv = [
        sys.executable, "-m", "celery", "-A", "app.celery_app",
        "flower", f"--address={address}", f"--port={port}", f"--conf={CONFIG}",
    ]
    return FlowerCommand(argv=argv, env=env)


def exec_flower(cmd: FlowerCommand) -> None:
    """Replace this process with Flower (signals and exit code are Flower's own)."""
    os.execvpe(cmd.argv[0], cmd.argv, cmd.env)
