"""``/mercato/build/1.0.0``: fetching builds from the peers that hold them.

    asker -> BuildRequest(cid, op="manifest")
    peer  -> BuildResponse(manifest=<canonical CBOR>)       checked against the CID
    asker -> BuildRequest(cid, op="chunks", first, count)   at most MAX_BATCH chunks
    peer  -> BuildResponse(chunks=[...])                    each checked on arrival

    asker -> BuildRequest(cid, op="have")                   how much of it is there
    peer  -> BuildResponse(have=<chunks verified>, total=<chunks>)
    asker -> BuildRequest(cid, op="offer")                  "I hold it: fetch it from me"
    peer  -> BuildResponse()                                it fetches in the background

A peer that lacks the build or the chunks refuses with ``unknown_build`` or
``missing``; a range outside the build is ``bad_range``. Only chunks the
serving node verified itself are ever sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mercato.p2p import Message, RequestProtocol

from ._store import CHUNK_SIZE, MAX_CHUNKS

MAX_BATCH = 4
MAX_MANIFEST_BYTES = 34 * MAX_CHUNKS + 1024
OPS = ("manifest", "chunks", "have", "offer")


@dataclass(frozen=True)
class BuildRequest(Message):
    TYPE: ClassVar[str] = "build.request"
    cid: str = field(metadata={"max_len": 80})
    op: str = field(metadata={"max_len": 16})
    first: int = field(default=0, metadata={"min": 0, "max": MAX_CHUNKS})
    count: int = field(default=0, metadata={"min": 0, "max": MAX_BATCH})


@dataclass(frozen=True)
class BuildResponse(Message):
    TYPE: ClassVar[str] = "build.response"
    manifest: bytes = field(default=b"", metadata={"max_len": MAX_MANIFEST_BYTES})
    chunks: list[bytes] = field(
        default_factory=list, metadata={"max_len": MAX_BATCH, "item_max_len": CHUNK_SIZE}
    )
    have: int = field(default=0, metadata={"min": 0, "max": MAX_CHUNKS})
    total: int = field(default=0, metadata={"min": 0, "max": MAX_CHUNKS})


BUILD = RequestProtocol(
    "/mercato/build/1.0.0",
    BuildRequest,
    BuildResponse,
    max_request_bytes=1024,
    max_response_bytes=MAX_BATCH * (CHUNK_SIZE + 16) + MAX_MANIFEST_BYTES,
    timeout_s=30.0,
)
