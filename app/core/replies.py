"""Typed views of redis-py replies, for mypy only: nothing here changes a value at run time.

The clients of this project never set ``decode_responses``, so every reply is ``bytes``; redis-py 8
types them ``bytes | str`` (either setting), stream reads as ``... | None`` and a ``Script`` made
before any client as needing one. These helpers say what the replies are, with ``cast``."""

from __future__ import annotations

from typing import Any, cast

import redis
from redis.commands.core import Script

Entry = tuple[bytes, dict[bytes, bytes]]  # one stream entry: ID, fields
StreamReply = list[tuple[bytes, list[Entry]]]  # XREAD / XREADGROUP: per stream, its entries


def text(v: Any) -> str:
    """``v.decode()`` of a reply known to be ``bytes``."""
    return cast(bytes, v).decode()


def entries(reply: Any) -> list[Entry]:
    """An XRANGE / XREVRANGE reply."""
    return cast(list[Entry], reply)


def streams(reply: Any) -> StreamReply:
    """An XREAD / XREADGROUP reply (``reply or []`` at the call site: a timeout gives ``None``)."""
    return cast(StreamReply, reply)


def scored(reply: Any) -> list[tuple[bytes, float]]:
    """A ZRANGE-family reply ``withscores=True``: (member, score) pairs."""
    return cast(list[tuple[bytes, float]], reply)


def members(reply: Any) -> set[bytes]:
    """An SMEMBERS reply."""
    return cast(set[bytes], reply)


def fields(reply: Any) -> dict[bytes, bytes]:
    """An HGETALL reply."""
    return cast(dict[bytes, bytes], reply)


def script(lua: bytes) -> Script:
    """``Script(None, lua)``: registered with no client; each call passes ``client=``."""
    return Script(cast(redis.Redis, None), lua)
