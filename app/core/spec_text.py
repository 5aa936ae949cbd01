"""Reading a service spec *file* leniently: JSON5 (``//`` and ``/* */`` comments, trailing commas,
unquoted keys) plus ``#`` line comments, as in the EAS documentation's own examples.

Why a library and a pre-pass: ``json5`` (PyPI) does the grammar; it has no ``#`` comments, which the
EAS docs use, so they are blanked first by a small scanner that knows about strings (a ``#``
inside a string stays). Blanking keeps every line and column, so errors point at the user's text.
The HTTP API keeps strict JSON (its body is ``application/json``).
"""

from __future__ import annotations

import re
from typing import Any

import json5


class SpecTextError(ValueError):
    """The text is not JSON5; ``str()`` names the line and column."""


def strip_hash_comments(text: str) -> str:
    """Blank ``# ...`` to the end of the line wherever ``#`` is outside a string."""
    out, quote, escaped, comment = [], "", False, False
    for ch in text:
        if comment:
            if ch == "\n":
                comment = False
                out.append(ch)
            else:
                out.append(" ")
            continue
        if quote:
            escaped = not escaped and ch == "\\"
            if ch == quote and not escaped:
                quote = ""
            out.append(ch)
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "#":
            comment = True
            out.append(" ")
            continue
        out.append(ch)
    return "".join(out)


def loads(text: str) -> Any:
    """Decode a spec file's text; raise :class:`SpecTextError` with ``line N, column M``."""
    try:
        return json5.loads(strip_hash_comments(text))
    except RecursionError:
        raise SpecTextError("nested too deeply") from None
    except ValueError as exc:
        msg = str(exc)
        m = re.match(r"<string>:(\d+) (.*?)(?: at column (\d+))?$", msg, re.S)
        if m:
            line, what, col = m.groups()
            msg = f"line {line}" + (f", column {col}" if col else "") + f": {what!r}"[:200]
        raise SpecTextError(msg) from None


def line_of(text: str, key_path: str) -> int | None:
    """The line where the last key of ``key_path`` (``a.b[0].c``) is first written, to point at it."""
    last = re.split(r"[.\[\]]", key_path.strip())
    last = [p for p in last if p and not p.isdigit()]
    if not last:
        return None
    m = re.search(r"""(["']?)""" + re.escape(last[-1]) + r"""\1\s*:""", text)
    return text.count("\n", 0, m.start()) + 1 if m else None
