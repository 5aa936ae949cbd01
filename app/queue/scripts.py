"""The Lua scripts of the queue layer: ``app/queue/lua/*.lua``, read once, run by EVALSHA.

Why files: Lua kept in Python strings and glued together from fragments was hard to read, to
review and to reuse, and was run two ways (``Script`` objects and raw ``EVAL``). Here each script
is one ``.lua`` file beside the keys' owners (dramatiq keeps its broker's Lua the same way), and
every caller runs it one way: a redis-py ``Script`` made with no client, called with ``client=``
(a client or a pipeline), so EVALSHA runs and the text is sent only after a NOSCRIPT.

Shared functions (a record's finish, start, stale and release guards, an event's emit, the
"INCR then ``XADD 0-<i>``" append, a run time's record) live once in ``lua/lib/``. A script
names what it uses with a line ``-- include: lib/<name>.lua``; :meth:`Library.source` replaces
that line with the file's text (includes of includes too, each file once per script), so the
guards a worker's task script runs are the very code the API's own scripts run.
"""

from __future__ import annotations

import re
from pathlib import Path

from redis.commands.core import Script

from app.core import replies

_INCLUDE = re.compile(r"^-- include: (\S+)$", re.MULTILINE)


class Library:
    """The ``.lua`` files of one folder (and its ``lib/``), each read and composed once per process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._scripts: dict[str, Script] = {}

    def source(self, name: str) -> str:
        """The text of ``<root>/<name>.lua`` with its ``-- include:`` lines expanded."""
        return self._expand(f"{name}.lua", set())

    def _expand(self, path: str, seen: set[str]) -> str:
        seen.add(path)

        def include(m: re.Match[str]) -> str:
            lib = m.group(1)
            return "" if lib in seen else self._expand(lib, seen).rstrip("\n")

        return _INCLUDE.sub(include, (self.root / path).read_text())

    def script(self, name: str) -> Script:
        """``<name>.lua`` as a ``Script`` registered with no client: call it with ``client=``."""
        if name not in self._scripts:
            self._scripts[name] = replies.script(self.source(name).encode())
        return self._scripts[name]


QUEUE = Library(Path(__file__).parent / "lua")


def load(name: str) -> Script:
    """The queue layer's script ``app/queue/lua/<name>.lua``; call it ``(keys=..., args=..., client=r)``."""
    return QUEUE.script(name)
