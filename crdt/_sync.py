"""``/mercato/sync/2.0.0``: anti-entropy between two registry replicas.

Pull-based; each side runs it against its peers on connect and periodically:

    asker -> SyncRequest(digest)
    peer  -> SyncResponse(equal=True)                 same registry: done
          |  SyncResponse(equal=False, need_states=True)
    asker -> SyncRequest(digest, publishers, states, with_states=True)
                                                       its state vector per feed (none
                                                       at all for an empty replica)
    peer  -> SyncResponse(updates=[...], more=bool)    signed updates the asker lacks

The digest is a hash over every (publisher, state vector) pair, so two
replicas in step exchange 32 bytes. Updates travel as the publisher signed
them; the asker verifies each before applying it. ``more`` means the response
hit its size bound: ask again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import ClassVar

from mercato.p2p import Message, RequestProtocol

from ._feed import MAX_SNAPSHOT_BYTES

MAX_FEEDS = 20_000
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def digest(states: dict[str, bytes]) -> bytes:
    h = hashlib.sha256()
    for address in sorted(states):
        h.update(address.encode() + b"\0" + states[address] + b"\0")
    return h.digest()


@dataclass(frozen=True)
class SyncRequest(Message):
    TYPE: ClassVar[str] = "sync.request"
    VERSION: ClassVar[int] = 2  # with_states, so that an empty replica can ask (1.0.0 could not)
    digest: bytes = field(metadata={"max_len": 32})
    publishers: list[str] = field(
        default_factory=list, metadata={"max_len": MAX_FEEDS, "item_max_len": 64}
    )
    states: list[bytes] = field(
        default_factory=list, metadata={"max_len": MAX_FEEDS, "item_max_len": 4096}
    )
    with_states: bool = False


@dataclass(frozen=True)
class SyncResponse(Message):
    TYPE: ClassVar[str] = "sync.response"
    equal: bool = False
    need_states: bool = False
    updates: list[bytes] = field(
        default_factory=list,
        metadata={"max_len": 100_000, "item_max_len": MAX_SNAPSHOT_BYTES + 1024},
    )
    more: bool = False


SYNC = RequestProtocol(
    "/mercato/sync/2.0.0",
    SyncRequest,
    SyncResponse,
    max_request_bytes=2 * 1024 * 1024,
    max_response_bytes=MAX_RESPONSE_BYTES + 64 * 1024,
    timeout_s=20.0,
)
