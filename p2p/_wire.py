"""Framing for the project's own protocols: varint length prefix + canonical CBOR.

A frame is ``uvarint(len(body)) || body`` where ``body`` is canonical CBOR of a
plain value (maps with string keys, lists, text, bytes, ints, floats, bools,
null). Decoding is strict, because every frame comes from an untrusted peer:
the length is checked against the caller's bound before anything is read,
nesting is limited, CBOR tags and duplicate keys are refused, and the body must
re-encode to exactly the same bytes (so a signature over a decoded value always
verifies against the bytes that were sent).
"""

from __future__ import annotations

from typing import Any, Protocol

import cbor2

from ._codec import canonical_cbor
from ._errors import P2PError

MAX_DEPTH = 16
_MAX_VARINT_BYTES = 5  # enough for any frame bound below 2**35


class FrameError(P2PError):
    """A frame is malformed, oversized, non-canonical or truncated."""


class FrameTooLarge(FrameError):
    """A frame declares more bytes than the receiver allows."""


class ByteReader(Protocol):
    """What `read_frame` needs: ``read(n)`` returning up to n bytes, b"" at EOF."""

    async def read(self, n: int) -> bytes: ...


def encode_uvarint(n: int) -> bytes:
    if n < 0:
        raise ValueError("uvarint must be non-negative")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_SCALARS = frozenset({type(None), bool, int, float, str, bytes})


def _check_plain(value: Any, depth: int = 0) -> None:
    # Exact types: cbor2 builds exactly these, and anything else (tags, simple
    # values, undefined) is refused. Scalars are checked inline to keep calls few.
    if depth > MAX_DEPTH:
        raise FrameError(f"nesting deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind in _SCALARS:
        return
    if value and depth >= MAX_DEPTH and kind in (list, dict):
        raise FrameError(f"nesting deeper than {MAX_DEPTH}")  # its items would be
    if kind is list:
        for item in value:
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
        return
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise FrameError("map keys must be text")
            if type(item) not in _SCALARS:
                _check_plain(item, depth + 1)
        return
    raise FrameError(f"unsupported CBOR value of type {kind.__name__}")


def _refuse_tag(decoder: Any, tag: Any) -> Any:
    raise FrameError(f"CBOR tag {tag.tag} is not allowed")


def encode_body(value: Any, max_bytes: int) -> bytes:
    """Canonical CBOR of ``value``; FrameTooLarge if it exceeds ``max_bytes``."""
    _check_plain(value)
    body = canonical_cbor(value)
    if len(body) > max_bytes:
        raise FrameTooLarge(f"message of {len(body)} bytes exceeds the bound of {max_bytes}")
    return body


def decode_body(body: bytes) -> Any:
    """Strictly decode one canonical CBOR body; FrameError if it is not one."""
    try:
        value = cbor2.loads(
            body,
            max_depth=MAX_DEPTH + 1,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            semantic_decoders={},
            tag_hook=_refuse_tag,
        )
    except FrameError:
        raise
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise FrameError(f"not valid CBOR: {exc}") from exc
    _check_plain(value)
    if canonical_cbor(value) != body:
        raise FrameError("CBOR is not in canonical form (or has trailing bytes)")
    return value


def encode_frame(value: Any, max_bytes: int) -> bytes:
    """One length-prefixed frame holding ``value``."""
    body = encode_body(value, max_bytes)
    return encode_uvarint(len(body)) + body


class FrameReader:
    """Reads frames from a stream whose ``read(n)`` may return fewer bytes than asked.

    Not safe for concurrent readers. Errors: FrameTooLarge, FrameError (bad
    varint, truncated frame, bad body), EOFError at a clean end between frames.
    """

    def __init__(self, stream: ByteReader) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._eof = False
        self.bytes_read = 0
        """Bytes of every frame read so far, prefixes included."""

    async def _fill(self, need: int) -> bool:
        while len(self._buffer) < need and not self._eof:
            chunk = await self._stream.read(max(need - len(self._buffer), 4096))
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
        return len(self._buffer) >= need

    async def _read_length(self) -> int:
        n, shift = 0, 0
        for i in range(_MAX_VARINT_BYTES):
            if not await self._fill(i + 1):
                if i == 0:
                    raise EOFError
                raise FrameError("stream ended inside a length prefix")
            byte = self._buffer[i]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise FrameError("length prefix is not minimally encoded")
                del self._buffer[: i + 1]
                return n
        raise FrameError("length prefix is too long")

    async def read(self, max_bytes: int) -> Any:
        """The next frame's value. The declared length is checked before reading the body."""
        length = await self._read_length()
        self.bytes_read += len(encode_uvarint(length)) + length
        if length > max_bytes:
            raise FrameTooLarge(f"peer sent a frame of {length} bytes; the bound is {max_bytes}")
        if not await self._fill(length):
            raise FrameError(f"stream ended {length - len(self._buffer)} bytes short of a frame")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return decode_body(body)
