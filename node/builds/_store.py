"""The build store: content-addressed builds in the data dir, verified chunk by chunk.

A build is cut into CHUNK_SIZE chunks; its `Manifest` lists their SHA-256s and
its id (CID) is the SHA-256 of the manifest's canonical CBOR: ``bld-<hex>``. So
a manifest is checked against the CID, and each chunk against the manifest,
the moment it arrives: a node never stores, serves or runs bytes that do not
match.

On disk: ``blobs/<cid>`` holds the bytes (written at each chunk's offset, so a
transfer resumes where it stopped), and the store's SQLite tables record each
build (size, manifest, pinned) and each chunk verified so far. A chunk is
recorded only after its bytes are written and synced, so after a crash the
record never claims more than the file holds.

`BuildStore` is blocking; the node calls it from worker threads. Errors:
`BuildError` and below (quota, unknown build, bad manifest).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator, Set
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mercato.p2p import FrameError, canonical_cbor, decode_canonical

from .._errors import NodeError

CHUNK_SIZE = 1024 * 1024
MAX_BUILD_BYTES = 4 * 1024 * 1024 * 1024
MAX_CHUNKS = MAX_BUILD_BYTES // CHUNK_SIZE
CID_PREFIX = "bld-"

SCHEMA = """
CREATE TABLE builds (
    cid      TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    chunks   INTEGER NOT NULL,
    manifest BLOB NOT NULL,
    pinned   INTEGER NOT NULL DEFAULT 0,
    added    REAL NOT NULL
);
CREATE TABLE build_chunks (
    cid TEXT NOT NULL,
    idx INTEGER NOT NULL,
    PRIMARY KEY (cid, idx)
) WITHOUT ROWID;
"""


class BuildError(NodeError):
    """An error of the build store; the message says what to do."""


class UnknownBuild(BuildError):
    """No build with that CID is stored here."""


class BadManifest(BuildError):
    """A manifest does not decode, is out of bounds, or does not match its CID."""


class QuotaExceeded(BuildError):
    """Storing the build would pass the storage quota, or the disk is full."""


@dataclass(frozen=True)
class Manifest:
    size: int
    chunks: tuple[bytes, ...]
    chunk_size: int = CHUNK_SIZE

    def encode(self) -> bytes:
        return canonical_cbor(
            {"v": 1, "size": self.size, "chunk_size": self.chunk_size, "chunks": list(self.chunks)}
        )

    @property
    def cid(self) -> str:
        return CID_PREFIX + hashlib.sha256(self.encode()).hexdigest()

    def chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    @classmethod
    def decode(cls, data: bytes, cid: str | None = None) -> Manifest:
        """Strictly decode; BadManifest if malformed, out of bounds or not ``cid``'s."""
        try:
            obj = decode_canonical(data)
        except FrameError as exc:
            raise BadManifest(f"the manifest does not decode: {exc}") from exc
        if not isinstance(obj, dict) or set(obj) != {"v", "size", "chunk_size", "chunks"}:
            raise BadManifest("the manifest has the wrong fields")
        size, chunk_size, chunks = obj["size"], obj["chunk_size"], obj["chunks"]
        if obj["v"] != 1 or chunk_size != CHUNK_SIZE:
            raise BadManifest("the manifest's version or chunk size is not one this node reads")
        if type(size) is not int or not 0 < size <= MAX_BUILD_BYTES:
            raise BadManifest(f"a build is 1 byte to {MAX_BUILD_BYTES} bytes")
        if not isinstance(chunks, list) or len(chunks) != -(-size // chunk_size):
            raise BadManifest("the manifest's chunk list does not match its size")
        if not all(isinstance(c, bytes) and len(c) == 32 for c in chunks):
            raise BadManifest("every chunk hash is 32 bytes")
        manifest = cls(size, tuple(chunks), chunk_size)
        if cid is not None and manifest.cid != cid:
            raise BadManifest(f"the manifest is not the one of {cid}")
        return manifest


def check_cid(cid: str) -> str:
    """``cid`` if it is a well-formed build id; BuildError otherwise."""
    body = cid[len(CID_PREFIX) :] if cid.startswith(CID_PREFIX) else ""
    if len(body) != 64 or any(c not in "0123456789abcdef" for c in body):
        raise BuildError(f"{cid[:80]!r} is not a build id (bld- and 64 hex digits)")
    return cid


def manifest_of(path: Path) -> Manifest:
    """Hash a file into its manifest (blocking)."""
    hashes, size = [], 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            hashes.append(hashlib.sha256(chunk).digest())
            size += len(chunk)
    if size == 0:
        raise BuildError(f"{path} is empty")
    if size > MAX_BUILD_BYTES:
        raise BuildError(f"{path} is over {MAX_BUILD_BYTES} bytes")
    return Manifest(size, tuple(hashes))


@dataclass(frozen=True)
class BuildInfo:
    cid: str
    size: int
    chunks: int
    have: int
    pinned: bool

    @property
    def complete(self) -> bool:
        return self.have == self.chunks

    def to_dict(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "size": self.size,
            "chunks": self.chunks,
            "have": self.have,
            "complete": self.complete,
            "pinned": self.pinned,
        }


class BuildStore:
    """Builds on disk with their records. Blocking; one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, root: Path, quota_bytes: int) -> None:
        self.conn = conn
        self.root = root
        self.quota_bytes = quota_bytes
        root.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _recorded(self, cid: str) -> Iterator[None]:
        """Undo the data file if its record cannot be written (a full disk)."""
        try:
            yield
        except sqlite3.Error as exc:
            self.path(cid).unlink(missing_ok=True)
            raise QuotaExceeded(f"cannot record {cid}: {exc}") from exc

    def path(self, cid: str) -> Path:
        return self.root / check_cid(cid)

    # -- records -----------------------------------------------------------------

    def info(self, cid: str) -> BuildInfo | None:
        row = self.conn.execute(
            "SELECT size, chunks, pinned, (SELECT COUNT(*) FROM build_chunks c WHERE c.cid = b.cid)"
            " FROM builds b WHERE cid = ?",
            (cid,),
        ).fetchone()
        if row is None:
            return None
        return BuildInfo(cid, row[0], row[1], row[3], bool(row[2]))

    def list_builds(self) -> list[BuildInfo]:
        cids = [r[0] for r in self.conn.execute("SELECT cid FROM builds ORDER BY added")]
        return [info for cid in cids if (info := self.info(cid)) is not None]

    def manifest(self, cid: str) -> Manifest:
        row = self.conn.execute("SELECT manifest FROM builds WHERE cid = ?", (cid,)).fetchone()
        if row is None:
            raise UnknownBuild(f"no build {cid} here")
        return Manifest.decode(bytes(row[0]))

    def used_bytes(self) -> int:
        (total,) = self.conn.execute("SELECT COALESCE(SUM(size), 0) FROM builds").fetchone()
        return int(total)

    def missing(self, cid: str) -> list[int]:
        """Indexes of the chunks of ``cid`` not verified here yet."""
        info = self.info(cid)
        if info is None:
            raise UnknownBuild(f"no build {cid} here")
        have = {
            r[0] for r in self.conn.execute("SELECT idx FROM build_chunks WHERE cid = ?", (cid,))
        }
        return [i for i in range(info.chunks) if i not in have]

    # -- writing -----------------------------------------------------------------

    def begin(self, manifest: Manifest, pinned: bool = False) -> BuildInfo:
        """Make room for a build about to arrive (or return it if it is here already)."""
        cid = manifest.cid
        existing = self.info(cid)
        if existing is not None:
            if pinned and not existing.pinned:
                self.pin(cid)
            return self.info(cid) or existing
        if self.used_bytes() + manifest.size > self.quota_bytes:
            raise QuotaExceeded(
                f"storing {manifest.size} bytes would pass the build quota of "
                f"{self.quota_bytes} bytes; free space with `mercato builds gc` or raise "
                "[builds] quota_mb"
            )
        try:
            with open(self.path(cid), "wb") as f:
                f.truncate(manifest.size)  # sparse: chunks land at their offsets
        except OSError as exc:
            raise QuotaExceeded(f"cannot make room for {cid}: {exc}") from exc
        with self._recorded(cid), self._transaction():
            self.conn.execute(
                "INSERT INTO builds(cid, size, chunks, manifest, pinned, added) "
                "VALUES (?,?,?,?,?,?)",
                (
                    cid,
                    manifest.size,
                    len(manifest.chunks),
                    manifest.encode(),
                    int(pinned),
                    time.time(),
                ),
            )
        return BuildInfo(cid, manifest.size, len(manifest.chunks), 0, pinned)

    def write_chunks(self, cid: str, chunks: dict[int, bytes]) -> list[int]:
        """Verify and store chunks of ``cid``; return the indexes that did NOT match.

        Matching chunks are written, synced, then recorded; a full disk raises
        QuotaExceeded and records nothing of this call.
        """
        manifest = self.manifest(cid)
        good: dict[int, bytes] = {}
        bad: list[int] = []
        for index, data in chunks.items():
            ok = (
                0 <= index < len(manifest.chunks)
                and len(data) == manifest.chunk_length(index)
                and hashlib.sha256(data).digest() == manifest.chunks[index]
            )
            (good.__setitem__(index, data) if ok else bad.append(index))
        if good:
            try:
                with open(self.path(cid), "r+b") as f:
                    for index, data in good.items():
                        f.seek(index * manifest.chunk_size)
                        f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as exc:
                raise QuotaExceeded(f"cannot write {cid}: {exc}") from exc
            try:
                with self._transaction():
                    self.conn.executemany(
                        "INSERT OR IGNORE INTO build_chunks(cid, idx) VALUES (?, ?)",
                        [(cid, i) for i in good],
                    )
            except sqlite3.Error as exc:  # the bytes are there; only the record failed
                raise QuotaExceeded(f"cannot record chunks of {cid}: {exc}") from exc
        return bad

    def add_file(self, source: Path, pinned: bool = True) -> BuildInfo:
        """Store a local file as a build (pinned by default); return its record.

        BuildError if the file cannot be read; QuotaExceeded if it does not fit (then
        nothing of it stays)."""
        try:
            manifest = manifest_of(source)
        except OSError as exc:
            raise BuildError(f"cannot read {source}: {exc.strerror or exc}") from exc
        info = self.begin(manifest, pinned)
        if info.complete:
            return info
        with source.open("rb") as f:
            index = 0
            while True:
                batch: dict[int, bytes] = {}
                while len(batch) < 16 and (chunk := f.read(manifest.chunk_size)):
                    batch[index] = chunk
                    index += 1
                if not batch:
                    break
                try:
                    if self.write_chunks(manifest.cid, batch):
                        raise BuildError(f"{source} changed while it was being stored")
                except BuildError:
                    self.remove(manifest.cid)  # no half-stored pinned record left behind
                    raise
        return self.info(manifest.cid) or info

    # -- reading -----------------------------------------------------------------

    def read_chunks(self, cid: str, first: int, count: int) -> list[bytes]:
        """Chunks first..first+count-1, each verified here before; BuildError otherwise."""
        manifest = self.manifest(cid)
        if first < 0 or count < 1 or first + count > len(manifest.chunks):
            raise BuildError(f"chunks {first}..{first + count - 1} are outside {cid}")
        have = {
            r[0]
            for r in self.conn.execute(
                "SELECT idx FROM build_chunks WHERE cid = ? AND idx >= ? AND idx < ?",
                (cid, first, first + count),
            )
        }
        if len(have) != count:
            raise BuildError(f"this node does not have every chunk of {first}..{first + count - 1}")
        out = []
        with open(self.path(cid), "rb") as f:
            for index in range(first, first + count):
                f.seek(index * manifest.chunk_size)
                data = f.read(manifest.chunk_length(index))
                if hashlib.sha256(data).digest() != manifest.chunks[index]:
                    # The disk changed under us: never serve it, fetch it again later.
                    with self._transaction():
                        self.conn.execute(
                            "DELETE FROM build_chunks WHERE cid = ? AND idx = ?", (cid, index)
                        )
                    raise BuildError(f"chunk {index} of {cid} is damaged on this node's disk")
                out.append(data)
        return out

    def verify(self, cid: str) -> list[int]:
        """Hash every recorded chunk again; forget those that no longer match (they
        will be fetched again) and return their indexes."""
        manifest = self.manifest(cid)
        recorded = set(range(len(manifest.chunks))) - set(self.missing(cid))
        bad = []
        with open(self.path(cid), "rb") as f:
            for index, digest in enumerate(manifest.chunks):
                if index not in recorded:
                    continue  # not fetched yet: nothing to check
                f.seek(index * manifest.chunk_size)
                if hashlib.sha256(f.read(manifest.chunk_length(index))).digest() != digest:
                    bad.append(index)
        if bad:
            with self._transaction():
                self.conn.executemany(
                    "DELETE FROM build_chunks WHERE cid = ? AND idx = ?", [(cid, i) for i in bad]
                )
        return bad

    # -- pins and collection --------------------------------------------------------

    def pin(self, cid: str, pinned: bool = True) -> None:
        with self._transaction():
            cur = self.conn.execute(
                "UPDATE builds SET pinned = ? WHERE cid = ?", (int(pinned), cid)
            )
        if cur.rowcount == 0:
            raise UnknownBuild(f"no build {cid} here; fetch it first")

    def remove(self, cid: str) -> None:
        with self._transaction():
            self.conn.execute("DELETE FROM build_chunks WHERE cid = ?", (cid,))
            self.conn.execute("DELETE FROM builds WHERE cid = ?", (cid,))
        self.path(cid).unlink(missing_ok=True)

    def gc(self, keep: Set[str] = frozenset()) -> list[str]:
        """Remove every build that is neither pinned nor in ``keep``; return their CIDs."""
        doomed = [
            r[0]
            for r in self.conn.execute("SELECT cid FROM builds WHERE pinned = 0")
            if r[0] not in keep
        ]
        for cid in doomed:
            self.remove(cid)
        return doomed
