"""The registry on disk: a journal of verified signed updates, and the query index.

Both live in the node's SQLite file, in the tables of `SCHEMA` (node applies it
as one of its migrations). The journal is the truth: on start every update in
it is verified and applied again, in whatever order, and the index is rebuilt
from the resulting feeds. The index is only ever derived from the feeds.

Functions here take a `sqlite3.Connection` and block; the node calls them from
its store's worker thread.

Search: free text (FTS5, every word must match, as a prefix), filters on kind,
capability, tag, maximum price and publisher, sorted by relevance, price or
newest, a page at a time with an opaque cursor.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from mercato.p2p import decode_canonical

from ._errors import Equivocation, QueryError, UpdateRejected
from ._feed import (
    MAX_SNAPSHOT_BYTES,
    Feed,
    FeedWriter,
    Registry,
    SignedUpdate,
    better,
    decode_state_vector,
)
from ._resolve import Resolution, resolve
from ._schema import MAX_PRICE, Release, validate_release
from ._semver import Version

log = logging.getLogger("mercato.registry")

SCHEMA = """
CREATE TABLE registry_updates (
    sig       BLOB PRIMARY KEY,
    publisher TEXT NOT NULL,
    body      BLOB NOT NULL,
    received  REAL NOT NULL
);
CREATE INDEX registry_updates_publisher ON registry_updates(publisher, received);
CREATE TABLE registry_listings (
    id           INTEGER PRIMARY KEY,
    publisher    TEXT NOT NULL,
    name         TEXT NOT NULL,
    kind         TEXT NOT NULL,
    title        TEXT NOT NULL,
    summary      TEXT NOT NULL,
    price        INTEGER NOT NULL,
    royalty_bps  INTEGER NOT NULL,
    version      TEXT,
    deprecated   INTEGER NOT NULL,
    updated      REAL NOT NULL,
    doc          TEXT NOT NULL,
    UNIQUE (publisher, name)
);
CREATE INDEX registry_listings_price ON registry_listings(price, publisher, name);
CREATE INDEX registry_listings_updated ON registry_listings(updated, publisher, name);
CREATE TABLE registry_terms (
    term       TEXT NOT NULL,
    listing_id INTEGER NOT NULL,
    PRIMARY KEY (term, listing_id)
);
CREATE INDEX registry_terms_listing ON registry_terms(listing_id);
CREATE VIRTUAL TABLE registry_text USING fts5(
    name, title, summary, description, terms, tokenize = 'unicode61'
);
"""
# Migration 2 of the registry: each journaled update's writer clock, so that
# anti-entropy selects what a peer lacks with one indexed range scan.
JOURNAL_CLOCKS = """
ALTER TABLE registry_updates ADD COLUMN clock INTEGER NOT NULL DEFAULT -1;
CREATE INDEX registry_updates_clock ON registry_updates(publisher, clock);
CREATE TABLE registry_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
MIGRATIONS = (SCHEMA, JOURNAL_CLOCKS)
# Migration 3 of the registry (the node applies it after its own later ones, as
# its migration 12): the journal with one index, the one every query uses. An
# update is unique by its signature; its publisher and clock are part of what
# is signed, so (publisher, clock, sig) is unique exactly when sig is, and that
# key takes each row near its feed's last one instead of at a random place (a
# random 64-byte key dirtied a page of its index for nearly every row). The
# (publisher, received) index was read by no query. Rows are found by rowid,
# the clock index or a scan of the whole journal, never by sig alone.
JOURNAL_KEYED = """
CREATE TABLE registry_updates_keyed (
    sig       BLOB NOT NULL,
    publisher TEXT NOT NULL,
    body      BLOB NOT NULL,
    received  REAL NOT NULL,
    clock     INTEGER NOT NULL
);
INSERT INTO registry_updates_keyed(sig, publisher, body, received, clock)
    SELECT sig, publisher, body, received, clock FROM registry_updates ORDER BY publisher, clock;
DROP TABLE registry_updates;
ALTER TABLE registry_updates_keyed RENAME TO registry_updates;
CREATE UNIQUE INDEX registry_updates_feed ON registry_updates(publisher, clock, sig);
"""
COMPACT_AFTER = 64  # journaled updates of one feed before its publisher snapshots it
COMPACTED = "journal/compacted"  # the outcome of a snapshot that changed only the journal
SORTS = ("relevance", "price", "newest")
MAX_LIMIT = 100
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Query:
    text: str = ""
    kind: str | None = None
    capability: str | None = None
    tag: str | None = None
    max_price: int | None = None
    publisher: str | None = None
    sort: str = "relevance"
    limit: int = 20
    cursor: str | None = None

    def check(self) -> None:
        if self.sort not in SORTS:
            raise QueryError(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        if self.max_price is not None and not 0 <= self.max_price <= MAX_PRICE:
            raise QueryError(f"max price must be between 0 and {MAX_PRICE} lamports")
        if self.kind is not None and self.kind not in ("agent", "model"):
            raise QueryError("kind must be agent or model")
        if len(self.text) > 512:
            raise QueryError("search text is limited to 512 characters")


@dataclass(frozen=True)
class SearchPage:
    results: list[dict[str, Any]]
    cursor: str | None
    took_ms: float = 0.0
    total_hint: int = field(default=0)


# -- journal ---------------------------------------------------------------------


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK if the block raises), whatever the
    connection's isolation level; inside a transaction already, just the block.

    (``with conn:`` would not do: on an autocommit connection, which the node
    uses, it begins nothing, and every statement would commit and sync alone.)
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


# OR IGNORE: an update journaled already (its (publisher, clock, sig) is) is not news.
_JOURNAL_INSERT = (
    "INSERT OR IGNORE INTO registry_updates(sig, publisher, body, received, clock) "
    "VALUES (?,?,?,?,?)"
)


def _journal_row(signed: SignedUpdate) -> tuple[bytes, str, bytes, float, int]:
    return (signed.sig, signed.address, signed.encode(), time.time(), signed.clock)


def journal_append(conn: sqlite3.Connection, signed: SignedUpdate) -> bool:
    """Remember a verified update; False if it was there already."""
    cur = conn.execute(_JOURNAL_INSERT, _journal_row(signed))
    return cur.rowcount == 1


@dataclass(frozen=True)
class DamagedUpdate:
    """A journaled update that no longer verifies (a damaged disk, an edited file)."""

    publisher: str
    clock: int
    why: str

    def describe(self) -> str:
        return (
            f"the registry journal's update of {self.publisher} at clock {self.clock} is "
            f"damaged ({self.why}): it was removed, and is fetched again from peers"
        )


def journal_load(conn: sqlite3.Connection) -> tuple[list[SignedUpdate], list[DamagedUpdate]]:
    """Every journaled update, each feed's in its writer's order, and the entries
    that do not decode or verify any more; those are deleted (so that a sound copy
    from a peer can take their place) and returned, never dropped unsaid."""
    updates, damaged = [], []
    with transaction(conn):
        for rowid, publisher, body, clock in conn.execute(
            "SELECT rowid, publisher, body, clock FROM registry_updates"
        ).fetchall():
            try:
                signed = SignedUpdate.decode(bytes(body))
                if not signed.verified():
                    raise UpdateRejected("its signature does not verify")
            except UpdateRejected as exc:
                damaged.append(DamagedUpdate(str(publisher), int(clock), str(exc)))
                conn.execute("DELETE FROM registry_updates WHERE rowid = ?", (rowid,))
                continue
            if clock < 0:  # journaled before clocks were recorded
                conn.execute(
                    "UPDATE registry_updates SET clock = ? WHERE rowid = ?", (signed.clock, rowid)
                )
            updates.append(signed)
    updates.sort(key=lambda u: (u.publisher, u.clock))
    return updates, damaged


@dataclass(frozen=True)
class Fork:
    """How a replica settled its copy of a feed against a peer's (`adopt`)."""

    publisher: str
    kept: str  # "ours" or "theirs"
    ours_clock: int
    theirs_clock: int
    proven: bool  # the two histories diverge: the publisher signed both
    lost: dict[str, dict[str, bytes]]  # entries of the losing history the winner lacks


class FeedCopyLike(Protocol):
    publisher: str
    applied: list[SignedUpdate]

    @property
    def feed(self) -> Feed | None: ...

    @property
    def whole(self) -> bool: ...


def _lost(winner: Feed, loser: Feed | None) -> dict[str, dict[str, bytes]]:
    if loser is None:
        return {}
    kept = winner.content()
    return {
        root: {k: v for k, v in entries.items() if k not in kept[root]}
        for root, entries in loser.content().items()
    }


def _diverged(updates: list[SignedUpdate] | None, winner: Feed, loser: Feed) -> bool:
    """Whether the loser is *not* simply an earlier state of the winner: equal
    clocks (with other content, or `adopt` would not be here), or the winner's
    history passes through the loser's state with other content. When the
    winner's updates are not at hand (it is ours) or a snapshot jumps over that
    state, nothing is proven."""
    if winner.clock == loser.clock:
        return True
    if updates is None:
        return False
    replay = Registry()
    for signed in updates:
        if signed.clock > loser.clock:  # it jumps over the loser's state
            return not signed.is_snapshot
        replay.apply(signed, verified=True)
        feed = replay.feeds[signed.address]
        if feed.clock == loser.clock:
            return feed.content_hash() != loser.content_hash()
    return False


# -- index -----------------------------------------------------------------------


def _terms(tags: Iterable[str], capabilities: Iterable[str]) -> list[str]:
    return [f"tag:{t}" for t in tags] + [f"cap:{c}" for c in capabilities]


def latest_versions(feed: Feed) -> dict[str, str]:
    """Each listing's newest released version, read from the release keys alone."""
    latest: dict[str, Version] = {}
    for key in feed.doc["releases"]:
        name, _, text = key.partition("@")
        version = Version.parse(text)
        if name not in latest or latest[name] < version:
            latest[name] = version
    return {name: str(v) for name, v in latest.items()}


def index_listing(
    conn: sqlite3.Connection,
    feed: Feed,
    name: str,
    latest: str | None,
    updated: float | None = None,
) -> None:
    """Project listing ``name`` of ``feed``, whose newest release is ``latest``, into the index.

    Rows are keyed by the listing's integer id, which is also its full-text
    rowid, so replacing one listing costs the same however large the index is.
    ``updated`` (for sorting by newest) defaults to now.
    """
    publisher = feed.address
    row = conn.execute(
        "SELECT id FROM registry_listings WHERE publisher = ? AND name = ?", (publisher, name)
    ).fetchone()
    if row is not None:
        conn.execute("DELETE FROM registry_text WHERE rowid = ?", (row[0],))
        conn.execute("DELETE FROM registry_terms WHERE listing_id = ?", (row[0],))
        conn.execute("DELETE FROM registry_listings WHERE id = ?", (row[0],))
    listing = feed.listing(name)
    if listing is None:
        return
    doc = {**listing.to_wire(), "publisher": publisher, "version": latest}
    values = (
        publisher,
        name,
        listing.kind,
        listing.title,
        listing.summary,
        listing.price,
        listing.royalty_bps,
        latest,
        int(listing.deprecated),
        time.time() if updated is None else updated,
        json.dumps(doc),
    )
    cur = conn.execute(
        "INSERT INTO registry_listings(id, publisher, name, kind, title, summary, price, "
        "royalty_bps, version, deprecated, updated, doc) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (row[0] if row else None, *values),
    )
    listing_id = cur.lastrowid
    terms = _terms(listing.tags, listing.capabilities)
    conn.executemany("INSERT INTO registry_terms VALUES (?,?)", [(t, listing_id) for t in terms])
    conn.execute(
        "INSERT INTO registry_text(rowid, name, title, summary, description, terms) "
        "VALUES (?,?,?,?,?,?)",
        (
            listing_id,
            name,
            listing.title,
            listing.summary,
            listing.description,
            " ".join(listing.tags + listing.capabilities),
        ),
    )


def _fts_query(text: str) -> str | None:
    words = _WORD.findall(text)[:16]
    return " AND ".join(f'"{w}"*' for w in words) if words else None


def _decode_cursor(cursor: str | None) -> list[Any] | None:
    if cursor is None:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if not isinstance(value, list) or len(value) != 3:
            raise ValueError
        key, publisher, name = value
        if not isinstance(key, int | float) or isinstance(key, bool) or abs(key) > 2**62:
            raise ValueError
        if not isinstance(publisher, str) or not isinstance(name, str):
            raise ValueError
        return value
    except (ValueError, TypeError) as exc:
        raise QueryError("the cursor is not one this node handed out") from exc


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode()


def search(conn: sqlite3.Connection, query: Query) -> SearchPage:
    """One page of listings matching ``query``; QueryError for bad filters."""
    query.check()
    started = time.perf_counter()
    where = ["l.deprecated = 0"]
    args: list[object] = []
    joins = ""
    match = _fts_query(query.text)
    if match:
        joins += " JOIN registry_text t ON t.rowid = l.id"
        where.append("registry_text MATCH ?")
        args.append(match)
    for term in _terms(
        [query.tag] if query.tag else [], [query.capability] if query.capability else []
    ):
        where.append(
            "EXISTS (SELECT 1 FROM registry_terms r WHERE r.term = ? AND r.listing_id = l.id)"
        )
        args.append(term)
    if query.kind:
        where.append("l.kind = ?")
        args.append(query.kind)
    if query.max_price is not None:
        where.append("l.price <= ?")
        args.append(query.max_price)
    if query.publisher:
        where.append("l.publisher = ?")
        args.append(query.publisher)
    sort = query.sort if (match or query.sort != "relevance") else "newest"
    position = _decode_cursor(query.cursor)
    if sort == "relevance":
        order, key = "bm25(registry_text), l.publisher, l.name", "bm25(registry_text)"
    elif sort == "price":
        order, key = "l.price, l.publisher, l.name", "l.price"
    else:
        order, key = "l.updated DESC, l.publisher, l.name", "l.updated"
    if position is not None:
        op = "<" if sort == "newest" else ">"
        where.append(f"({key} {op} ? OR ({key} = ? AND (l.publisher, l.name) > (?, ?)))")
        args += [position[0], position[0], position[1], position[2]]
    sql = (
        f"SELECT l.doc, {key} AS k, l.publisher, l.name FROM registry_listings l{joins} "
        f"WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
    )
    try:
        rows = conn.execute(sql, (*args, query.limit + 1)).fetchall()
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryError(
                "the search took too long; use longer words, fewer words or more filters"
            ) from exc
        raise QueryError(f"cannot search for {query.text[:80]!r}: {exc}") from exc
    page = rows[: query.limit]
    cursor = None
    if len(rows) > query.limit and page:
        last = page[-1]
        cursor = _encode_cursor([last[1], last[2], last[3]])
    results = [json.loads(r[0]) for r in page]
    return SearchPage(results, cursor, round((time.perf_counter() - started) * 1000, 3))


def describe(feed: Feed, name: str) -> dict[str, Any] | None:
    """Listing ``name`` of ``feed`` with its releases, newest first; None if there is none."""
    listing = feed.listing(name)
    if listing is None:
        return None
    releases = sorted(feed.releases_of(name), key=lambda r: Version.parse(r.version))
    return {
        **listing.to_wire(),
        "publisher": feed.address,
        "releases": [r.to_wire() for r in reversed(releases)],
    }


# -- the registry replica on disk --------------------------------------------------


def _listing_of(entry: str) -> str:
    """The listing an entry belongs to: "listings/x" and "releases/x@1.0.0" -> "x"."""
    return entry.split("/", 1)[1].split("@", 1)[0]


class RegistryStore:
    """A `Registry` kept in step with its journal and index. Blocking: run off the loop.

    Ingesting verifies, applies and journals (durably, one transaction per
    batch); the listings it touched are re-indexed by `flush_index`, which every
    search runs first, so a search always sees every acknowledged update.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.registry = Registry()
        self._dirty: dict[tuple[str, str], float] = {}  # listing -> when it changed
        self._closed = False
        self._too_large: dict[str, int] = {}  # feed -> journal size when it was too big
        self._cids: set[str] | None = None  # release_cids, once computed
        self._rows: list[tuple[bytes, str, bytes, float, int]] = []
        """Journal rows of the batch being ingested, written before its commit."""
        self.damaged: list[DamagedUpdate] = []
        """Journal entries found damaged when it was loaded (reported, fetched again)."""
        self._load()

    def _load(self, trust_index: bool = True) -> None:
        replayed = True
        updates, damaged = journal_load(self.conn)
        for entry in damaged:
            log.error(entry.describe(), extra={"publisher": entry.publisher, "clock": entry.clock})
        self.damaged += damaged
        replayed = not damaged
        for signed in updates:
            try:
                if self.registry.apply(signed, verified=True) is None:
                    replayed = False  # its predecessors are missing from the journal
            except (UpdateRejected, ValueError):
                replayed = False  # verified when stored; only a newer schema would refuse it
        with transaction(self.conn):
            # The index is kept if `close` marked it complete and the journal replayed
            # whole; after a crash it may miss the last changes, and is rebuilt.
            clean = self.conn.execute(
                "DELETE FROM registry_meta WHERE key = 'index_complete' RETURNING value"
            ).fetchall()
        if not (clean and replayed and trust_index):
            self.rebuild_index()

    def close(self) -> None:
        """Bring the index up to date and mark it complete, so the next start keeps it.

        A write after this clears the mark again.
        """
        self.flush_index()
        with transaction(self.conn):
            self.conn.execute(
                "INSERT OR REPLACE INTO registry_meta(key, value) VALUES ('index_complete', '1')"
            )
        self._closed = True

    def rebuild_index(self) -> None:
        """Project every listing of every feed into the index afresh."""
        with transaction(self.conn):
            previous = {
                (publisher, name): updated
                for publisher, name, updated in self.conn.execute(
                    "SELECT publisher, name, updated FROM registry_listings"
                )
            }
            self.conn.execute("DELETE FROM registry_listings")
            self.conn.execute("DELETE FROM registry_terms")
            self.conn.execute("DELETE FROM registry_text")
            now = time.time()
            for feed in self.registry.feeds.values():
                latest = latest_versions(feed)
                for name in feed.listing_names():
                    when = previous.get((feed.address, name), now)
                    index_listing(self.conn, feed, name, latest.get(name), when)

    def ingest(self, signed: SignedUpdate) -> list[str] | None:
        """Verify, apply and journal one signed update; UpdateRejected if bad.

        Returns the entries it (and any waiting updates it released) changed
        ("listings/x", "releases/x@1.0.0"); [COMPACTED] for a snapshot of exactly
        what the replica held, which replaced its journal; [] for a duplicate;
        None if it must wait for earlier updates. Only a non-empty list is news
        worth relaying.
        """
        (outcome,) = self.ingest_batch([signed])
        if isinstance(outcome, UpdateRejected):
            raise outcome
        return outcome

    def ingest_batch(
        self, updates: Iterable[SignedUpdate]
    ) -> list[list[str] | UpdateRejected | None]:
        """`ingest` for many updates in one transaction (one disk sync for all).

        Each outcome is as `ingest` returns, or the UpdateRejected for that
        update; a rejected update leaves no trace, the others are kept. If the
        transaction fails (a full disk, say), the replica is reloaded from the
        journal, so memory never runs ahead of what is stored, and the error is
        raised.
        """
        outcomes: list[list[str] | UpdateRejected | None] = []
        try:
            with transaction(self.conn):
                self._reopen_index()
                for signed in updates:
                    outcomes.append(self._ingest_one(signed))
                self._write_rows()  # inside the transaction: stored before acknowledged
        except BaseException:
            self._rows = []
            self._reload()
            raise
        return outcomes

    def _write_rows(self) -> None:
        """Journal the rows queued by `_ingest_one`, in one statement."""
        if self._rows:
            rows, self._rows = self._rows, []
            self.conn.executemany(_JOURNAL_INSERT, rows)

    def _ingest_one(self, signed: SignedUpdate) -> list[str] | UpdateRejected | None:
        try:
            applied = self.registry.apply(signed)
            # A snapshot of exactly what we hold: vet it, then compact.
            if applied == [] and signed.is_snapshot and self._compact(signed):
                return [COMPACTED]
        except UpdateRejected as exc:
            return exc
        if applied is None:
            return None
        changed: list[str] = []
        for update, entries in applied:
            self._rows.append(_journal_row(update))  # written by ingest_batch, before COMMIT
            now = time.time()
            self._dirty.update({(update.address, _listing_of(c)): now for c in entries})
            changed += entries
            self._note_releases(update.address, entries)
            if update.is_snapshot:
                self._compact(update, vetted=True)
        return changed

    def _compact(self, snapshot: SignedUpdate, vetted: bool = False) -> bool:
        """Keep ``snapshot`` in place of the journaled updates it covers, if it is
        exactly the feed; return whether it did. Runs inside the caller's transaction.

        Unless ``vetted`` (applied through every gate just now), the snapshot is
        vetted whole first: UpdateRejected if it fails a gate, Equivocation if it
        contradicts the feed.
        """
        self._write_rows()  # the rows this deletes may be queued still
        feed = self.registry.feeds.get(snapshot.address)
        if feed is None or feed.state() != snapshot.state:
            return False
        if not vetted:
            try:
                feed.check_snapshot(snapshot.update, snapshot.state)
            except Equivocation:
                log.warning("publisher %s signed two different histories", snapshot.address)
                raise
        self.conn.execute(
            "DELETE FROM registry_updates WHERE publisher = ? AND clock <= ? AND sig != ?",
            (snapshot.address, snapshot.clock, snapshot.sig),
        )
        journal_append(self.conn, snapshot)
        return True

    def counts(self) -> dict[str, int]:
        """How many listings (live and deprecated) and publishers this replica holds."""
        self.flush_index()  # as a search does: count every acknowledged update
        listings, deprecated, publishers = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(deprecated), 0), COUNT(DISTINCT publisher)"
            " FROM registry_listings"
        ).fetchone()
        return {
            "listings": int(listings) - int(deprecated),
            "deprecated": int(deprecated),
            "publishers": int(publishers),
        }

    def journal_size(self, publisher: str) -> int:
        """How many updates of ``publisher``'s feed are journaled."""
        (count,) = self.conn.execute(
            "SELECT COUNT(*) FROM registry_updates WHERE publisher = ?", (publisher,)
        ).fetchone()
        return int(count)

    def compact_own(self, writer: FeedWriter) -> SignedUpdate | None:
        """Snapshot the writer's feed if its journal has grown past COMPACT_AFTER.

        Returns the snapshot (to spread), or None if none was due or the feed is
        too large for one snapshot (then it tries again when the journal has
        doubled, not at every write).
        """
        address = writer.feed.address
        size = self.journal_size(address)
        if size <= max(COMPACT_AFTER, 2 * self._too_large.get(address, 0)):
            return None
        if len(writer.feed.update_since()) > MAX_SNAPSHOT_BYTES:
            self._too_large[address] = size
            return None
        snapshot = writer.snapshot()
        try:
            with transaction(self.conn):
                self._reopen_index()
                self._compact(snapshot, vetted=True)
        except BaseException:
            self._reload()
            raise
        return snapshot

    def commit_own(self, signed: SignedUpdate, name: str) -> None:
        """Journal an update this node's `FeedWriter` already applied, and re-index ``name``.

        If that fails, the replica is reloaded from the journal (the write is
        undone in memory too) and the error raised.
        """
        try:
            with transaction(self.conn):
                self._reopen_index()
                journal_append(self.conn, signed)
        except BaseException:
            self._reload()
            raise
        self._dirty[(signed.address, name)] = time.time()
        self._cids = None  # a local release: recompute (rare)

    def _reload(self) -> None:
        """Make memory match the journal again, after a failed write."""
        self.registry = Registry()
        self._dirty = {}
        self._cids = None
        self._load(trust_index=False)

    def _reopen_index(self) -> None:
        """A write after `close` means the index is no longer known complete."""
        if self._closed:
            self.conn.execute("DELETE FROM registry_meta WHERE key = 'index_complete'")
            self._closed = False

    def show(self, publisher: str, name: str) -> dict[str, Any] | None:
        """One listing with all its releases, or None."""
        feed = self.registry.feeds.get(publisher)
        return describe(feed, name) if feed is not None else None

    def release_cids(self) -> set[str]:
        """The build id of every release in the registry (a model's release may
        name none: it adds nothing).

        Computed once, then kept up to date as releases arrive (a release bound
        again to another build leaves its old id in the set until the next start).
        """
        if self._cids is None:
            self._cids = {
                release.cid
                for feed in self.registry.feeds.values()
                for release in feed.releases().values()
                if release.has_build
            }
        return set(self._cids)

    def _note_releases(self, address: str, entries: list[str]) -> None:
        if self._cids is None:
            return
        feed = self.registry.feeds[address]
        for entry in entries:
            root, _, key = entry.partition("/")
            if root == "releases" and (value := feed.doc["releases"].get(key)) is not None:
                release = validate_release(decode_canonical(bytes(value)))
                if release.has_build:
                    self._cids.add(release.cid)

    def releases_of(self, ref: str) -> list[Release] | None:
        """The releases of listing "publisher/name", or None if there is no such listing."""
        publisher, _, name = ref.partition("/")
        feed = self.registry.feeds.get(publisher)
        if feed is None or name not in feed.doc["listings"]:
            return None
        return feed.releases_of(name)

    def resolve(self, ref: str, range_text: str = "*") -> Resolution:
        """See `resolve`: the releases of ``ref`` in range, and what they need."""
        return resolve(self.releases_of, ref, range_text)

    def states(self) -> dict[str, bytes]:
        """Every feed's state vector: what anti-entropy compares."""
        return {address: feed.state() for address, feed in self.registry.feeds.items()}

    def heads(self) -> dict[str, tuple[bytes, bytes]]:
        """Every feed's state vector and content hash: what anti-entropy compares."""
        return {a: (f.state(), f.content_hash()) for a, f in self.registry.feeds.items()}

    def forked_with(self, theirs: dict[str, tuple[bytes, bytes]]) -> list[str]:
        """Feeds another replica holds at the same state as this one, with other
        content: the same publisher signed two histories."""
        feeds = self.registry.feeds
        return [
            address
            for address, (state, content) in theirs.items()
            if (feed := feeds.get(address)) is not None
            and feed.state() == state
            and feed.content_hash() != content
        ]

    def adopt(self, copy: FeedCopyLike) -> Fork | None:
        """Settle this replica's feed of ``copy.publisher`` against a peer's whole
        copy of it (verified update by update): the `better` history is kept, the
        other replaced, journal and index together. Returns what happened, or None
        if the two agree or the copy is not whole.

        A fork is blamed on the publisher only when it is proven: the two diverge
        at a state both passed through (one is not simply further along)."""
        theirs, address = copy.feed, copy.publisher
        if theirs is None or not copy.whole:
            return None
        ours = self.registry.feeds.get(address)
        if ours is not None and (ours.state(), ours.content_hash()) == (
            theirs.state(),
            theirs.content_hash(),
        ):
            return None
        if ours is None or better(theirs, ours):
            winner, loser, kept = theirs, ours, "theirs"
        else:
            winner, loser, kept = ours, theirs, "ours"
        fork = Fork(
            address,
            kept,
            ours.clock if ours else 0,
            theirs.clock,
            proven=loser is not None
            and _diverged(copy.applied if kept == "theirs" else None, winner, loser),
            lost=_lost(winner, loser),
        )
        if kept == "theirs":
            self._replace(address, theirs, copy.applied, ours)
        return fork

    def _replace(
        self, address: str, feed: Feed, updates: list[SignedUpdate], old: Feed | None
    ) -> None:
        try:
            with transaction(self.conn):
                self._reopen_index()
                self.conn.execute("DELETE FROM registry_updates WHERE publisher = ?", (address,))
                for signed in updates:
                    journal_append(self.conn, signed)
        except BaseException:
            self._reload()
            raise
        self.registry.feeds[address] = feed
        self.registry.forget_pending(address)
        now = time.time()
        names = set(feed.listing_names()) | set(old.listing_names() if old else ())
        self._dirty.update({(address, name): now for name in names})
        self._cids = None

    def missing_for(
        self, theirs: dict[str, bytes], max_bytes: int, only: str | None = None
    ) -> tuple[list[bytes], bool]:
        """Journaled updates a replica at ``theirs`` lacks, up to ``max_bytes``.

        Returns (encoded signed updates, whether more remain), each feed's in its
        writer's order. An update is lacking when its writer clock is past the
        other side's; a feed's snapshot stands in for the updates it replaced.
        ``only`` restricts the answer to one publisher's feed.
        """
        out: list[bytes] = []
        size = 0
        feeds = self.registry.feeds
        for address in [only] if only is not None else list(feeds):
            feed = feeds.get(address)
            their_state = theirs.get(address, b"")
            if feed is None or their_state == feed.state():
                continue
            try:
                their_clock = decode_state_vector(their_state).get(feed.client_id, 0)
            except ValueError:
                their_clock = 0
            rows = self.conn.execute(
                "SELECT body FROM registry_updates WHERE publisher = ? AND clock > ? "
                "ORDER BY clock",
                (address, their_clock),
            )
            for (body,) in rows:
                if size + len(body) > max_bytes and out:
                    return out, True
                out.append(bytes(body))
                size += len(body)
        return out, False

    def flush_index(self) -> int:
        """Re-index every listing changed since the last flush; return how many."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, {}
        by_feed: dict[str, list[tuple[str, float]]] = {}
        for (address, name), when in dirty.items():
            by_feed.setdefault(address, []).append((name, when))
        with transaction(self.conn):
            for address, names in by_feed.items():
                feed = self.registry.feeds[address]
                latest = latest_versions(feed)
                for name, when in names:
                    index_listing(self.conn, feed, name, latest.get(name), when)
        return len(dirty)

    def search(self, query: Query, budget_s: float | None = None) -> SearchPage:
        """One page of results; QueryError for bad filters, or if the search would
        take longer than ``budget_s`` (for queries from other peers)."""
        self.flush_index()
        if budget_s is None:
            return search(self.conn, query)
        deadline = time.monotonic() + budget_s
        # SQLite calls this every 1,000 steps; non-zero interrupts the statement.
        self.conn.set_progress_handler(lambda: time.monotonic() > deadline, 1_000)
        try:
            return search(self.conn, query)
        finally:
            self.conn.set_progress_handler(None, 0)
