"""``/mercato/sync/3.0.0``: anti-entropy between two registry replicas.

Pull-based; each side runs it against its peers on connect and periodically:

    asker -> SyncRequest(digest)
    peer  -> SyncResponse(equal=True)                 same registry: done
          |  SyncResponse(equal=False, need_states=True)
    asker -> SyncRequest(digest, publishers, states, contents, with_states=True)
                                                       its state vector and content hash
                                                       per feed (none at all for an
                                                       empty replica)
    peer  -> SyncResponse(updates=[...], more=bool,    signed updates the asker lacks,
                          forks=[publisher, ...])      and the feeds it holds at the
                                                       asker's state with other content

The digest is a hash over every (publisher, state vector, content hash), so two
replicas in step exchange 32 bytes, and two that hold different content under
equal state vectors (a publisher that signed two histories) do not look in
step. Updates travel as the publisher signed them; the asker verifies each
before applying it. ``more`` means the response hit its size bound: ask again.
A feed in ``forks`` (or one whose updates the asker refused as an
equivocation) is settled by fetching the peer's whole copy of it (the query
protocol's ``feed`` operation) and keeping the better history.

Version 3 added the content hashes and ``forks``; version 2 peers, whose
digests never match, are not spoken to.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

from mercato.p2p import Message, RequestProtocol

from ._feed import MAX_SNAPSHOT_BYTES

MAX_FEEDS = 20_000
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
MAX_FORKS = 64  # per response: each costs the asker a whole feed's fetch


def digest(heads: dict[str, tuple[bytes, bytes]]) -> bytes:
    """One hash over every feed's (publisher, state vector, content hash)."""
    h = hashlib.sha256()
    for address in sorted(heads):
        state, content = heads[address]
        h.update(address.encode() + b"\0" + state + b"\0" + content)
    return h.digest()


@dataclass(frozen=True)
class SyncRequest(Message):
    TYPE: ClassVar[str] = "sync.request"
    VERSION: ClassVar[int] = 3  # contents (2: with_states, so that an empty replica can ask)
    digest: bytes = field(metadata={"max_len": 32})
    publishers: list[str] = field(
        default_factory=list, metadata={"max_len": MAX_FEEDS, "item_max_len": 64}
    )
    states: list[bytes] = field(
        default_factory=list, metadata={"max_len": MAX_FEEDS, "item_max_len": 4096}
    )
    contents: list[bytes] = field(
        default_factory=list, metadata={"max_len": MAX_FEEDS, "item_max_len": 32}
    )
    with_states: bool = False


@dataclass(frozen=True)
class SyncResponse(Message):
    TYPE: ClassVar[str] = "sync.response"
    VERSION: ClassVar[int] = 3
    equal: bool = False
    need_states: bool = False
    updates: list[bytes] = field(
        default_factory=list,
        metadata={"max_len": 100_000, "item_max_len": MAX_SNAPSHOT_BYTES + 1024},
    )
    more: bool = False
    forks: list[str] = field(
        default_factory=list, metadata={"max_len": MAX_FORKS, "item_max_len": 64}
    )


SYNC = RequestProtocol(
    "/mercato/sync/3.0.0",
    SyncRequest,
    SyncResponse,
    max_request_bytes=2 * 1024 * 1024,
    max_response_bytes=MAX_RESPONSE_BYTES + 64 * 1024,
    timeout_s=20.0,
)
