"""The EAS queue service's two protobuf messages, encoded by hand (no ``protobuf`` runtime).

Why by hand: ``eas-prediction`` pins protobuf 3.20.x, which clashes with most modern stacks; the
wire format of these two messages is small enough to write out. The schema (queueservice.proto)::

    message DataFrameProto { uint64 index = 1; map<string, string> tags = 2; bytes data = 3; string message = 4; }
    message DataFrameListProto { repeated DataFrameProto index = 1; }

A map field is a repeated embedded message ``{string key = 1; string value = 2;}``. Unknown
fields are skipped when decoding, as protobuf does, so newer senders stay readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtoError(ValueError):
    """Bytes that are not a valid encoding of the message."""


@dataclass
class DataFrame:
    """One queue message: the ``DataFrameProto`` fields, with ``eas_prediction.DataFrame``'s names."""

    index: int = 0
    data: bytes = b""
    tags: dict[str, str] = field(default_factory=dict)
    message: str = ""


def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # protobuf writes negative int64 as ten-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num: int, wire: int) -> bytes:
    return _varint((num << 3) | wire)


def _len_field(num: int, payload: bytes) -> bytes:
    return _key(num, LENGTH) + _varint(len(payload)) + payload


def encode_frame(df: DataFrame) -> bytes:
    """``DataFrameProto`` bytes; proto3 leaves out fields that hold their default value."""
    out = bytearray()
    if df.index:
        out += _key(1, VARINT) + _varint(df.index)
    for k, v in df.tags.items():
        entry = _len_field(1, k.encode()) + _len_field(2, v.encode())
        out += _len_field(2, entry)
    if df.data:
        out += _len_field(3, bytes(df.data))
    if df.message:
        out += _len_field(4, df.message.encode())
    return bytes(out)


def encode_list(frames: list[DataFrame]) -> bytes:
    """``DataFrameListProto`` bytes."""
    return b"".join(_len_field(1, encode_frame(f)) for f in frames)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise ProtoError("varint too long")


def _fields(buf: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) triples of one message."""
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _read_varint(buf, pos)
            out.append((num, wire, value))
        elif wire == LENGTH:
            n, pos = _read_varint(buf, pos)
            if pos + n > len(buf):
                raise ProtoError("truncated length-delimited field")
            out.append((num, wire, buf[pos : pos + n]))
            pos += n
        elif wire in (FIXED64, FIXED32):
            pos += 8 if wire == FIXED64 else 4
            if pos > len(buf):
                raise ProtoError("truncated fixed field")
        else:
            raise ProtoError(f"unsupported wire type {wire}")
    return out


def _text(v: int | bytes) -> str:
    if not isinstance(v, bytes):
        raise ProtoError("expected a string field")
    try:
        return v.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtoError("string field is not UTF-8") from None


def decode_frame(buf: bytes) -> DataFrame:
    df = DataFrame()
    for num, wire, value in _fields(buf):
        if num == 1 and wire == VARINT:
            df.index = int(value)  # type: ignore[arg-type]
        elif num == 2 and wire == LENGTH:
            kv = {n: _text(v) for n, w, v in _fields(value) if w == LENGTH}  # type: ignore[arg-type]
            df.tags[kv.get(1, "")] = kv.get(2, "")
        elif num == 3 and wire == LENGTH:
            df.data = bytes(value)  # type: ignore[arg-type]
        elif num == 4 and wire == LENGTH:
            df.message = _text(value)
    return df


def decode_list(buf: bytes) -> list[DataFrame]:
    return [decode_frame(v) for n, w, v in _fields(buf) if n == 1 and w == LENGTH]  # type: ignore[arg-type]
