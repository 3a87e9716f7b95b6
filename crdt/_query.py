"""``/mercato/query/1.0.0``: ask another peer's registry, so a user can query from anywhere.

Three operations, one request each::

    asker -> QueryRequest(op="search", text, filters, sort, limit, cursor)
    peer  -> QueryResponse(results=[listing, ...], cursor)

    asker -> QueryRequest(op="show", publisher, name, since=b"")
    peer  -> QueryResponse(updates=[signed update, ...], more)
    asker -> QueryRequest(op="show", ..., since=<its state after those>)   while more

    asker -> QueryRequest(op="feed", publisher, since=b"")   the whole feed, paged as
    peer  -> QueryResponse(updates=[...], more)               show is: a fork is settled
                                                              by comparing histories

Search results are the peer's word: each is checked against the schema (a
peer cannot make the asker print garbage) but nothing proves the publisher
wrote it. ``show`` is proof: the peer sends the publisher's signed updates of
the whole feed and the asker applies them to a fresh replica, so what it shows
is exactly what the publisher signed (though a peer may withhold newer updates).

Bounds: at most `MAX_LIMIT` results, each without its description (``show``
has it), and `MAX_RESPONSE_BYTES` per response.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from mercato.p2p import (
    FrameError,
    Message,
    RequestProtocol,
    b58decode,
    canonical_cbor,
    decode_canonical,
)

from ._errors import QueryError, SchemaError, UpdateRejected, VersionError
from ._feed import MAX_SNAPSHOT_BYTES, Feed, Registry, SignedUpdate
from ._index import MAX_LIMIT, Query, describe
from ._schema import _PUBLISHER, MAX_PRICE, validate_listing
from ._semver import Version

MAX_RESPONSE_BYTES = 4 * 1024 * 1024
OPS = ("search", "show", "feed")


@dataclass(frozen=True)
class QueryRequest(Message):
    TYPE: ClassVar[str] = "query.request"
    op: str = field(metadata={"max_len": 16})
    text: str = field(default="", metadata={"max_len": 512})
    kind: str | None = field(default=None, metadata={"max_len": 16})
    capability: str | None = field(default=None, metadata={"max_len": 64})
    tag: str | None = field(default=None, metadata={"max_len": 64})
    max_price: int | None = field(default=None, metadata={"min": 0, "max": MAX_PRICE})
    publisher: str | None = field(default=None, metadata={"max_len": 64})
    name: str | None = field(default=None, metadata={"max_len": 64})
    sort: str = field(default="relevance", metadata={"max_len": 16})
    limit: int = field(default=20, metadata={"min": 1, "max": MAX_LIMIT})
    cursor: str | None = field(default=None, metadata={"max_len": 512})
    since: bytes = field(default=b"", metadata={"max_len": 4096})
    """For show: the asker's state vector of the feed, to continue a long feed."""

    @classmethod
    def search(cls, query: Query) -> QueryRequest:
        return cls(op="search", **{name: getattr(query, name) for name in _QUERY_FIELDS})

    def query(self) -> Query:
        """The search this request asks for; QueryError if it makes no sense."""
        if self.op != "search":
            raise QueryError(f"op must be one of {', '.join(OPS)}, not {self.op!r}")
        query = Query(**{name: getattr(self, name) for name in _QUERY_FIELDS})
        query.check()
        return query


_QUERY_FIELDS = tuple(f.name for f in fields(Query))


@dataclass(frozen=True)
class QueryResponse(Message):
    TYPE: ClassVar[str] = "query.response"
    results: list[bytes] = field(
        default_factory=list, metadata={"max_len": MAX_LIMIT, "item_max_len": 64 * 1024}
    )
    cursor: str | None = field(default=None, metadata={"max_len": 512})
    updates: list[bytes] = field(
        default_factory=list,
        metadata={"max_len": 100_000, "item_max_len": MAX_SNAPSHOT_BYTES + 1024},
    )
    more: bool = False


QUERY = RequestProtocol(
    "/mercato/query/1.0.0",
    QueryRequest,
    QueryResponse,
    max_request_bytes=4096,
    max_response_bytes=MAX_RESPONSE_BYTES + 64 * 1024,
    timeout_s=8.0,  # inside the control client's 10 s
)


def encode_result(doc: dict[str, Any]) -> bytes:
    """A search result for the wire: the listing without its description."""
    return canonical_cbor({k: v for k, v in doc.items() if k != "description"})


def decode_result(data: bytes) -> dict[str, Any]:
    """A search result from a peer, checked; QueryError if it is not one."""
    try:
        doc = decode_canonical(data)
        if not isinstance(doc, dict):
            raise QueryError("a result is not a map")
        publisher, version = doc.pop("publisher", None), doc.pop("version", None)
        if (
            not isinstance(publisher, str)
            or not _PUBLISHER.fullmatch(publisher)
            or len(b58decode(publisher)) != 32
        ):
            raise QueryError("a result has no valid publisher")
        if version is not None:
            Version.parse(version)
        listing = validate_listing(doc)
    except (FrameError, SchemaError, VersionError, ValueError) as exc:
        raise QueryError(f"a peer sent a malformed search result: {exc}") from exc
    return {**listing.to_wire(), "publisher": publisher, "version": version}


class FeedCopy:
    """A peer's copy of one publisher's feed, verified update by update as it arrives."""

    def __init__(self, publisher: str) -> None:
        self.publisher = publisher
        self._registry = Registry()
        self.applied: list[SignedUpdate] = []
        """The updates that make up the copy, in the order they were applied."""
        self.refused = 0

    def add(self, updates: list[bytes]) -> None:
        """Verify and apply ``updates`` as on ingest; skip those that are not the
        publisher's or do not verify. Blocking (signatures): run off the event loop."""
        for data in updates:
            try:
                signed = SignedUpdate.decode(data)
                if signed.address == self.publisher:
                    done = self._registry.apply(signed)
                    self.applied += [update for update, _ in done or ()]
            except UpdateRejected:
                self.refused += 1

    @property
    def feed(self) -> Feed | None:
        """The copy as a feed, if it holds anything."""
        return self._registry.feeds.get(self.publisher)

    @property
    def whole(self) -> bool:
        """Whether every update received was applied (none refused, none waiting)."""
        return not self.refused and not self._registry.pending(self.publisher)

    def state(self) -> bytes:
        feed = self._registry.feeds.get(self.publisher)
        return feed.state() if feed is not None else b""

    def show(self, name: str) -> dict[str, Any] | None:
        """Listing ``name`` as the verified copy has it, or None."""
        feed = self._registry.feeds.get(self.publisher)
        return describe(feed, name) if feed is not None else None


def verified_listing(updates: list[bytes], publisher: str, name: str) -> dict[str, Any] | None:
    """Listing ``name`` from a fresh replica of ``publisher``'s feed built from
    ``updates``, each verified (see `FeedCopy`). None if there is no such listing."""
    copy = FeedCopy(publisher)
    copy.add(updates)
    return copy.show(name)
