"""``--help`` without type noise: typer (>= 0.2x) prints ``<bool>`` / ``<str>`` beside every option.

Why patch here: the option names and help text already say what a flag or a name is; a type is
worth showing only for numbers (``<int>``, ``<float>``) and explicit metavars. There is no typer
setting for this, so the one method that renders the type column is wrapped once, at CLI import.
"""

from __future__ import annotations

from typing import Any

from typer import core

QUIET = {"<bool>", "<str>", "<path>", "<Path>", "<text>"}


def quiet_metavars() -> None:
    """Hide the obvious types in the rich help (idempotent)."""
    for cls in (core.TyperOption, core.TyperArgument):
        original = cls.display_type_rich
        if getattr(original, "_scalejob_quiet", False):
            continue

        def display(self: Any, ctx: Any, _original: Any = original) -> str | None:
            shown = _original(self, ctx)
            return None if shown is None or shown.removesuffix("...") in QUIET else shown

        display._scalejob_quiet = True  # type: ignore[attr-defined]
        cls.display_type_rich = display  # type: ignore[method-assign]
