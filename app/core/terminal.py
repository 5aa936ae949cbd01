"""What the CLI may print of untrusted text (command output, error messages): no control sequences.

Why: a command's output is written by whoever submitted the command. Passed raw to a terminal,
``ESC ] 52`` sets the user's clipboard, CSI sequences move the cursor or rewrite what was printed
above, and some terminals answer queries into their input. The stored log keeps the bytes as
they were; only what the CLI shows is cleaned (Rich strips BEL/BS/CR, not ESC).
"""

from __future__ import annotations

import re

_SEQUENCES = re.compile(
    r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC ... BEL/ST (clipboard, title, hyperlinks)
    r"|\x1b[P^_X][^\x1b]*(?:\x1b\\)?"  # DCS / PM / APC / SOS strings
    r"|\x1b\[[0-?]*[ -/]*[@-~]"  # CSI (colours, cursor moves, erase)
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
    r"|\x1b[ -~]?"  # any other escape
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tabs and newlines kept)."""
    return _CONTROLS.sub("", _SEQUENCES.sub("", text))
