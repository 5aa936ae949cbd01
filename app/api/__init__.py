"""The HTTP API: the FastAPI app (:mod:`app.api.main`), request routes and auth.

``uvicorn app.api:app`` is the documented entry point; ``app`` is looked up on first use, so
importing :mod:`app.api.auth` alone does not build the whole application.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from app.api.main import app  # noqa: PLC0415 - lazy on purpose: importing app.api.auth must not build the app

        return app
    raise AttributeError(name)
