"""The build service of the daemon: serves stored builds and fetches them from peers.

Fetching (`BuildService.fetch`): the manifest comes from the first provider
whose copy matches the CID; then the missing chunks are asked for in batches,
from every provider at once (PER_PROVIDER requests in flight each). Every
chunk is checked against the manifest as it arrives and written at its
offset, so an interrupted fetch resumes with what is still missing. A
provider that sends a chunk that does not match is penalised and not asked
again; one that fails or lacks the chunks is dropped after MAX_FAILURES; the
fetch completes from the others, or fails saying that no provider could
finish it.

Every store call runs in the store's worker thread, off the event loop.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import trio

from mercato.p2p import Overlay, P2PError, Refused, RemoteError, TokenBucket

from .._config import BuildsSection
from .._store import Store
from ._store import (
    BadManifest,
    BuildError,
    BuildInfo,
    BuildStore,
    Manifest,
    UnknownBuild,
    check_cid,
    manifest_of,
)
from ._transfer import BUILD, MAX_BATCH, OPS, BuildRequest, BuildResponse

log = logging.getLogger("mercato.builds")

PER_PROVIDER = 4
MAX_FAILURES = 3
PENALTY_CORRUPT = 50.0
ANNOUNCE_EVERY_S = 600.0
MAX_FETCHES = 4  # fetches at once that an offer may start
OFFERS_PER_S = 0.5
OFFER_BURST = 4.0
USE_KEEP_S = 600.0  # a build a task ran stays this long though this node is not its keeper
PEER_CHECK_S = 0.5  # how often the repair loop looks whether peers came or went
COPIES_WAIT_S = 40.0  # how long a release waits for its build to reach its peers
OFFER_AGAIN_S = 2.0

Progress = Callable[[int, int], None]
"""Called with (bytes stored, build size) as chunks arrive."""


@dataclass
class FetchState:
    """What an ongoing fetch has done, for `mercato builds fetch`'s progress bar."""

    cid: str
    size: int = 0
    done: int = 0
    providers: list[str] = field(default_factory=list)
    bad: set[str] = field(default_factory=set)
    error: str = ""
    finished: bool = True
    pin: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "cid": self.cid,
            "size": self.size,
            "done": self.done,
            "providers": len(self.providers),
            "corrupt_providers": len(self.bad),
            "finished": self.finished,
            "error": self.error,
        }


@dataclass
class Spread:
    """How a released build reaches its peers, while a release waits for copies."""

    cid: str
    wanted: int = 0  # copies needed on other peers: min_copies, or fewer when fewer peers
    peers: int = 0  # connected peers that store builds
    held_by: list[str] = field(default_factory=list)  # those shown to hold all of it
    sent: int = 0  # bytes of its chunks this node served meanwhile
    answers: dict[str, str] = field(default_factory=dict)  # peer -> its answer to the offer


def distance(cid: str, peer: str) -> int:
    """Kademlia XOR distance between a build and a peer (both hashed to 256 bits)."""
    a = hashlib.sha256(cid.encode()).digest()
    b = hashlib.sha256(peer.encode()).digest()
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def responsible(cid: str, peers: Iterable[str], replicas: int) -> list[str]:
    """The ``replicas`` peers closest to ``cid``, closest first."""
    return sorted(set(peers), key=lambda peer: distance(cid, peer))[:replicas]


class BuildService:
    """Serves builds, fetches them, and keeps each released build on the peers
    responsible for it (see `repair_once`)."""

    def __init__(
        self,
        store: Store,
        builds: BuildStore,
        overlay: Overlay,
        config: BuildsSection,
        released: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        self._store = store
        self.builds = builds
        self._overlay = overlay
        self.config = config
        self._released = released
        self.fetches: dict[str, FetchState] = {}
        self._nursery: trio.Nursery | None = None
        self._announced: dict[str, float] = {}
        self._wake = trio.Event()
        self._offers: dict[str, TokenBucket] = {}
        self._offered: set[str] = set()  # builds whose fetch an offer started
        self._last_released: set[str] = set()  # as of the last repair round
        self._in_use: dict[str, int] = {}
        self._used: dict[str, float] = {}  # cid -> when a run last used it (monotonic)
        self._fetched: dict[str, float] = {}  # cid -> when a fetch of it ended (monotonic)
        self._spreading: dict[str, list[Spread]] = {}  # releases waiting for copies, by cid

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer build requests, and keep background fetches, until cancelled."""
        self._overlay.requests.serve(BUILD, self._answer)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            last_round, last_peers = -self.config.repair_interval_s, set(self.live_peers())
            while True:
                with trio.move_on_after(PEER_CHECK_S):
                    await self._wake.wait()
                peers = set(self.live_peers())
                due = trio.current_time() - last_round >= self.config.repair_interval_s
                # A peer that left may have held copies: repair at once, not at the next tick.
                if not (self._wake.is_set() or due or peers != last_peers):
                    continue
                self._wake = trio.Event()
                last_round, last_peers = trio.current_time(), peers
                try:
                    await self.repair_once()
                except (BuildError, P2PError) as exc:
                    log.warning("build repair round failed", extra={"why": str(exc)})

    def _fetching(self) -> set[str]:
        return {cid for cid, state in self.fetches.items() if not state.finished}

    @contextlib.contextmanager
    def using(self, cid: str) -> Iterator[None]:
        """Hold ``cid`` against repair and gc while a task fetches and runs it, and
        for USE_KEEP_S after (a provider keeps what it serves while it serves it)."""
        self._in_use[cid] = self._in_use.get(cid, 0) + 1
        try:
            yield
        finally:
            self._in_use[cid] -= 1
            if not self._in_use[cid]:
                del self._in_use[cid]
            self._used[cid] = time.monotonic()

    def _recently_fetched(self) -> set[str]:
        horizon = time.monotonic() - USE_KEEP_S
        for cid in [c for c, t in self._fetched.items() if t < horizon]:
            del self._fetched[cid]
        return set(self._fetched)

    def _recently_used(self) -> set[str]:
        horizon = time.monotonic() - USE_KEEP_S
        for cid in [c for c, t in self._used.items() if t < horizon]:
            del self._used[cid]
        return set(self._in_use) | set(self._used)

    def keep(self) -> set[str]:
        """Builds gc must leave: those being fetched or recently run, and released
        builds this node keeps for the network (it is among the closest peers to them)."""
        peers = self.live_peers()
        mine = {
            cid
            for cid in self._last_released
            if self._overlay.peer_id in responsible(cid, peers, self.config.replicas)
        }
        return self._fetching() | self._recently_used() | mine

    def wake(self) -> None:
        """Run a repair round now (a peer left, a build was released or offered)."""
        self._wake.set()

    # -- responsibility ----------------------------------------------------------

    def live_peers(self) -> list[str]:
        """This node and the connected peers that store builds."""
        return [self._overlay.peer_id, *self.providers()]

    async def repair_once(self) -> dict[str, list[str]]:
        """One round: fetch what this node is responsible for and lacks, announce
        what it holds, and drop unpinned builds it is no longer responsible for once
        their responsible peers hold them. Returns what it did, by action."""
        done: dict[str, list[str]] = {"fetching": [], "dropped": [], "announced": []}
        me, peers = self._overlay.peer_id, self.live_peers()
        held = {info.cid: info for info in await self._store.run(self.builds.list_builds)}
        released = await self._released() if self._released is not None else set()
        self._last_released = released
        for cid in sorted(released | set(held)):
            duty = responsible(cid, peers, self.config.replicas)
            info = held.get(cid)
            if me in duty:
                if info is None or not info.complete:
                    sources = await self.copies(cid)
                    if sources and self.start_fetch(cid, sources, False).finished is False:
                        done["fetching"].append(cid)
                elif await self._announce(cid):
                    done["announced"].append(cid)
            elif (
                info is not None
                and not info.pinned
                and cid not in self._fetching()
                and cid not in self._recently_used()
                and cid not in self._recently_fetched()
                # Not ours to keep: drop it once its keepers hold it. What an offer
                # started and that never completed goes at once.
                and ((not info.complete and cid in self._offered) or await self._held_by(cid, duty))
                # Again, with no await since: a task may have started on it meanwhile.
                and cid not in self._recently_used()
                and cid not in self._fetching()
            ):
                await self._store.run(self.builds.remove, cid)
                self._offered.discard(cid)
                done["dropped"].append(cid)
        return done

    async def _take_offer(self, peer: str, cid: str) -> None:
        """Fetch an offered build if this node is responsible for it, within bounds: an
        offer costs the offerer nothing, and the fetch costs this node disk."""
        bucket = self._offers.setdefault(peer, TokenBucket(OFFER_BURST))
        if not bucket.take(OFFERS_PER_S, OFFER_BURST):
            raise Refused("busy", "too many offers; slow down")
        if self._overlay.peer_id not in responsible(cid, self.live_peers(), self.config.replicas):
            raise Refused("not_responsible", "this node is not among the peers closest to it")
        running = sum(not state.finished for state in self.fetches.values())
        if running >= MAX_FETCHES:
            raise Refused("busy", "this node is fetching enough builds already")
        info = await self._store.run(self.builds.info, cid)
        if info is None or not info.complete:
            self._offered.add(cid)
            self.start_fetch(cid, [peer], False)

    async def _announce(self, cid: str) -> bool:
        """Provider record for ``build:<cid>``, renewed every ANNOUNCE_EVERY_S."""
        if time.monotonic() - self._announced.get(cid, -ANNOUNCE_EVERY_S) < ANNOUNCE_EVERY_S:
            return False
        self._announced[cid] = time.monotonic()
        try:
            await self._overlay.dht.provide(f"build:{cid}")
        except P2PError as exc:
            log.debug("could not announce a build", extra={"cid": cid, "why": str(exc)})
            return False
        return True

    async def have(self, peer: str, cid: str) -> tuple[int, int]:
        """How many chunks of ``cid`` ``peer`` holds, of how many; (0, 0) if unknown."""
        try:
            answer = await self._overlay.requests.request(
                peer, BUILD, BuildRequest(cid=cid, op="have")
            )
        except P2PError:
            return 0, 0
        return answer.have, answer.total

    async def info(self, cid: str) -> BuildInfo | None:
        """The record of ``cid`` here, or None (in the store's thread)."""
        return await self._store.run(self.builds.info, cid)

    async def proves(self, peer: str, cid: str) -> bool:
        """Whether ``peer`` holds all of ``cid``, checked: it says so, and a chunk
        picked at random that it sends matches the manifest (a peer could lie about
        holding a build, to have the others drop theirs)."""
        have, total = await self.have(peer, cid)
        if not total or have < total:
            return False
        try:
            manifest = await self._store.run(self.builds.manifest, cid)
        except UnknownBuild:  # not here: the peer's, checked against the CID, will do
            try:
                answer = await self._overlay.requests.request(
                    peer, BUILD, BuildRequest(cid=cid, op="manifest")
                )
                manifest = Manifest.decode(answer.manifest, cid)
            except (P2PError, BadManifest):
                return False
        index = secrets.randbelow(len(manifest.chunks))
        try:
            answer = await self._overlay.requests.request(
                peer, BUILD, BuildRequest(cid=cid, op="chunks", first=index, count=1)
            )
        except P2PError:
            return False
        if (
            len(answer.chunks) == 1
            and hashlib.sha256(answer.chunks[0]).digest() == (manifest.chunks[index])
        ):
            return True
        await self._overlay.host.penalize(peer, PENALTY_CORRUPT, f"false claim to hold {cid}")
        return False

    async def _held_by(self, cid: str, peers: list[str]) -> bool:
        others = [p for p in peers if p != self._overlay.peer_id]
        for peer in others:
            if not await self.proves(peer, cid):
                return False
        return bool(others)

    async def copies(self, cid: str) -> list[str]:
        """Connected peers that hold all of ``cid``, each checked (see `proves`), asked
        all at once."""
        found: list[str] = []

        async def check(peer: str) -> None:
            if await self.proves(peer, cid):
                found.append(peer)

        async with trio.open_nursery() as nursery:
            for peer in self.providers():
                nursery.start_soon(check, peer)
        return found

    async def add_file(self, source: Path, pinned: bool = True) -> BuildInfo:
        """Store a local file as a build, hashing and copying it off the store's
        thread (16 MiB at a time), so other database work goes on meanwhile."""
        try:
            manifest = await trio.to_thread.run_sync(manifest_of, source)
        except OSError as exc:
            raise BuildError(f"cannot read {source}: {exc.strerror or exc}") from exc
        existed = await self._store.run(self.builds.info, manifest.cid) is not None
        info = await self._store.run(self.builds.begin, manifest, pinned)
        if info.complete:
            return info
        try:
            with source.open("rb") as f:
                for first in range(0, len(manifest.chunks), 16):
                    data = await trio.to_thread.run_sync(f.read, 16 * manifest.chunk_size)
                    batch = {
                        first + i: data[i * manifest.chunk_size : (i + 1) * manifest.chunk_size]
                        for i in range(-(-len(data) // manifest.chunk_size))
                    }
                    if await self._store.run(self.builds.write_chunks, manifest.cid, batch):
                        raise BuildError(f"{source} changed while it was being stored")
        except BaseException:
            if not existed:  # leave no half-stored record of our own behind
                with trio.CancelScope(shield=True):
                    await self._store.run(self.builds.remove, manifest.cid)
            raise
        stored = await self._store.run(self.builds.info, manifest.cid)
        return stored or info

    async def offer(self, cid: str, answers: dict[str, str] | None = None) -> list[str]:
        """Tell the peers responsible for ``cid`` that this node holds it; return those
        that took the offer. ``answers`` hears what each peer said, for a person."""
        # The closest peers other than this one: if this node is among the closest,
        # min_copies may still ask for `replicas` copies elsewhere.
        duty = responsible(cid, self.providers(), self.config.replicas)
        offered = []
        for peer in duty:
            try:
                await self._overlay.requests.request(peer, BUILD, BuildRequest(cid=cid, op="offer"))
                offered.append(peer)
                if answers is not None:
                    answers[peer] = "took the offer"
            except P2PError as exc:
                log.debug("offer refused", extra={"peer": peer, "why": str(exc)})
                if answers is not None:
                    answers[peer] = f"refused it ({exc})"
        return offered

    async def wait_for_copies(
        self,
        cid: str,
        wanted: int,
        timeout_s: float = COPIES_WAIT_S,
        spread: Spread | None = None,
        on_copies: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Offer ``cid`` to the peers responsible for it (again every few seconds, as
        peers may have come) until enough of them hold it; return those peers.

        Enough is ``wanted``, or every connected peer that stores builds when there
        are fewer: with none, nothing is waited for (a lone node's build is held
        by it alone, and peers fetch it as they join, see `repair_once`).
        BuildError if fewer hold it after ``timeout_s``, saying what each peer
        answered: the build stays stored and offered. Cancelling stops the wait;
        nothing is undone. ``spread`` is kept up to date for a progress display;
        ``on_copies`` hears each new count of peers holding it.
        """
        spread = spread if spread is not None else Spread(cid)
        watchers = self._spreading.setdefault(cid, [])
        watchers.append(spread)
        try:
            return await self._wait_for_copies(cid, wanted, timeout_s, spread, on_copies)
        finally:
            watchers.remove(spread)
            if not watchers:
                del self._spreading[cid]

    async def _wait_for_copies(
        self,
        cid: str,
        wanted: int,
        timeout_s: float,
        spread: Spread,
        on_copies: Callable[[int], None] | None,
    ) -> list[str]:
        deadline = trio.current_time() + timeout_s
        offered_at = -OFFER_AGAIN_S
        while True:
            spread.peers = self.possible_holders()
            spread.wanted = min(wanted, spread.peers)  # peers may come and go meanwhile
            if len(spread.held_by) >= spread.wanted:
                return spread.held_by
            if trio.current_time() >= deadline:
                raise BuildError(await self._why_too_few(spread, timeout_s))
            if trio.current_time() - offered_at >= OFFER_AGAIN_S:
                await self.offer(cid, spread.answers)
                offered_at = trio.current_time()
            await trio.sleep(0.2)  # the peers fetch in their own time; ask again
            before, spread.held_by = len(spread.held_by), await self.copies(cid)
            if on_copies is not None and len(spread.held_by) != before:
                on_copies(len(spread.held_by))

    async def _why_too_few(self, spread: Spread, timeout_s: float) -> str:
        """What happened to a build whose copies did not land in time, peer by peer."""
        said = []
        for peer, answer in sorted(spread.answers.items()):
            if answer == "took the offer":
                have, total = await self.have(peer, spread.cid)
                answer += f", holds {have} of {total} chunks" if total else ", holds none yet"
            said.append(f"{peer} {answer}")
        offered = "; ".join(said) or "no connected peer said it stores builds"
        return (
            f"only {len(spread.held_by)} of the {spread.wanted} copies needed of {spread.cid} "
            f"landed on other peers within {timeout_s:g} s ({spread.sent} bytes sent: "
            f"{offered}); nothing was released, and the build stays stored here and offered: "
            "run the release again later, or connect to more peers"
        )

    def start_fetch(self, cid: str, providers: list[str] | None, pinned: bool) -> FetchState:
        """Fetch in the background (see `fetch`); its progress is in the returned state.

        The repair loop leaves what was fetched for USE_KEEP_S after, pinned or
        not: it must not drop a build the moment a user fetched it (`builds gc`
        still may, if it is not pinned).
        """
        check_cid(cid)
        state = self.fetches.setdefault(cid, FetchState(cid))
        state.pin = state.pin or pinned  # a pin asked during a running fetch still counts
        if state.finished:

            async def background() -> None:
                try:
                    await self.fetch(cid, providers, state.pin)
                except Exception as exc:  # a background fetch never takes the node down
                    log.warning("fetch failed", extra={"cid": cid, "why": str(exc)})
                finally:
                    self._fetched[cid] = time.monotonic()

            state.finished, state.error = False, ""
            assert self._nursery is not None, "the build service is not running"
            self._nursery.start_soon(background)
        return state

    async def _answer(self, peer: str, request: BuildRequest) -> BuildResponse:
        try:
            check_cid(request.cid)
            if request.op == "manifest":
                manifest = await self._store.run(self.builds.manifest, request.cid)
                return BuildResponse(manifest=manifest.encode())
            if request.op == "chunks":
                chunks = await self._store.run(
                    self.builds.read_chunks, request.cid, request.first, request.count
                )
                for spread in self._spreading.get(request.cid, ()):
                    spread.sent += sum(map(len, chunks))
                return BuildResponse(chunks=chunks)
            if request.op == "have":
                info = await self._store.run(self.builds.info, request.cid)
                if info is None:
                    return BuildResponse()
                return BuildResponse(have=info.have, total=info.chunks)
            if request.op == "offer":
                await self._take_offer(peer, request.cid)
                return BuildResponse()
        except UnknownBuild as exc:
            raise Refused("unknown_build", "this node does not have that build") from exc
        except BuildError as exc:
            code = "bad_range" if "outside" in str(exc) else "missing"
            raise Refused(code, str(exc)) from exc
        raise Refused("bad_request", f"op must be one of {', '.join(OPS)}, not {request.op!r}")

    # -- fetching ----------------------------------------------------------------

    def possible_holders(self) -> int:
        """Connected peers that store builds, or may: those not identified yet count
        (a peer that has just connected says what it speaks a moment later)."""
        host = self._overlay.host
        return sum(
            BUILD.id in protocols or not protocols
            for protocols in map(host.protocols_of, host.connected_peers())
        )

    def providers(self) -> list[str]:
        """Connected peers that speak the build protocol."""
        host = self._overlay.host
        return [p for p in host.connected_peers() if BUILD.id in host.protocols_of(p)]

    async def fetch(
        self, cid: str, providers: list[str] | None = None, pinned: bool = False
    ) -> BuildInfo:
        """Fetch ``cid`` into the store (see the module docstring); BuildError if no
        provider could supply it. Cancelling leaves what arrived, for a later resume."""
        check_cid(cid)
        state = self.fetches.setdefault(cid, FetchState(cid))
        state.finished, state.error, state.bad = False, "", set()  # the host's bans persist
        state.pin = state.pin or pinned
        try:
            info = await self._fetch(
                state, providers if providers is not None else self.providers()
            )
        except BaseException as exc:
            state.error = str(exc) or type(exc).__name__
            raise
        finally:
            state.finished = True
        return info

    async def _fetch(self, state: FetchState, providers: list[str]) -> BuildInfo:
        cid = state.cid
        info = await self._store.run(self.builds.info, cid)
        if info is None:
            manifest = await self._manifest(cid, providers, state)
            info = await self._store.run(self.builds.begin, manifest, state.pin)
        manifest = await self._store.run(self.builds.manifest, cid)
        state.size = manifest.size
        failures: dict[str, int] = {}
        while True:
            missing = await self._store.run(self.builds.missing, cid)
            state.done = manifest.size - sum(manifest.chunk_length(i) for i in missing)
            if not missing:
                if state.pin:  # asked for by this fetch, or by one that joined it
                    await self._store.run(self.builds.pin, cid)
                stored = await self._store.run(self.builds.info, cid)
                return stored or info
            usable = [
                p for p in providers if p not in state.bad and failures.get(p, 0) < MAX_FAILURES
            ]
            if not usable:
                raise BuildError(
                    f"no provider could supply the rest of {cid} ({len(missing)} chunks "
                    "missing); try again when more peers hold it"
                )
            state.providers = usable
            await self._round(manifest, _batches(missing), usable, failures, state)

    async def _manifest(self, cid: str, providers: list[str], state: FetchState) -> Manifest:
        for peer in providers:
            try:
                answer = await self._overlay.requests.request(
                    peer, BUILD, BuildRequest(cid=cid, op="manifest")
                )
                return Manifest.decode(answer.manifest, cid)
            except BadManifest as exc:
                state.bad.add(peer)
                await self._overlay.host.penalize(peer, PENALTY_CORRUPT, f"bad manifest: {exc}")
            except P2PError as exc:
                log.debug("no manifest from a peer", extra={"peer": peer, "why": str(exc)})
        raise BuildError(
            f"none of {len(providers)} peers could give the manifest of {cid}; "
            "is the build stored on any peer this node is connected to?"
        )

    async def _round(
        self,
        manifest: Manifest,
        batches: list[tuple[int, int]],
        providers: list[str],
        failures: dict[str, int],
        state: FetchState,
    ) -> None:
        """Ask ``providers`` for ``batches`` until the batches or the providers run out."""
        cid = manifest.cid

        async def worker(peer: str) -> None:
            while batches and peer not in state.bad and failures.get(peer, 0) < MAX_FAILURES:
                first, count = batches.pop()
                try:
                    answer = await self._overlay.requests.request(
                        peer, BUILD, BuildRequest(cid=cid, op="chunks", first=first, count=count)
                    )
                    if len(answer.chunks) != count:
                        raise BadManifest(f"{len(answer.chunks)} chunks for {count} asked")
                except (P2PError, RemoteError, BadManifest) as exc:
                    failures[peer] = failures.get(peer, 0) + 1
                    batches.append((first, count))
                    log.debug("chunk request failed", extra={"peer": peer, "why": str(exc)})
                    await self._recover(peer, failures[peer])
                    continue
                failures[peer] = 0  # counts failures in a row
                chunks = dict(zip(range(first, first + count), answer.chunks, strict=True))
                bad = await self._store.run(self.builds.write_chunks, cid, chunks)
                state.done += sum(len(c) for i, c in chunks.items() if i not in bad)
                if bad:
                    state.bad.add(peer)  # never asked again in this fetch
                    batches.append((first, count))
                    await self._overlay.host.penalize(
                        peer, PENALTY_CORRUPT, f"sent {len(bad)} chunks of {cid} that do not match"
                    )
                    log.warning("a provider sent corrupt chunks", extra={"peer": peer, "cid": cid})

        try:
            async with trio.open_nursery() as nursery:
                for peer in providers:
                    for _ in range(PER_PROVIDER):
                        nursery.start_soon(worker, peer)
        except* BuildError as group:  # removed mid-fetch, disk full: the fetch stops
            raise group.exceptions[0] from group

    async def _recover(self, peer: str, failures: int) -> None:
        """Back off, and dial the peer again if the connection is gone (py-libp2p may
        drop a whole connection when streams on it are reset)."""
        await trio.sleep(min(2.0, 0.05 * 2**failures))
        host = self._overlay.host
        if peer in host.connected_peers():
            return
        for addr in host.peer_addrs(peer)[:4]:
            target = addr if "/p2p/" in addr else f"{addr}/p2p/{peer}"
            try:
                await host.connect(target)
                return
            except P2PError:
                continue


def _batches(missing: list[int]) -> list[tuple[int, int]]:
    """Runs of consecutive missing chunks, at most MAX_BATCH long, last to first
    (workers pop from the end, so the build arrives roughly in order)."""
    out: list[tuple[int, int]] = []
    for index in missing:
        if out and out[-1][0] + out[-1][1] == index and out[-1][1] < MAX_BATCH:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((index, 1))
    return out[::-1]
