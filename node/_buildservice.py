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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from p2p import Overlay, P2PError, Refused, RemoteError

from ._builds import (
    BadManifest,
    BuildError,
    BuildInfo,
    BuildStore,
    Manifest,
    UnknownBuild,
    check_cid,
)
from ._store import Store
from ._transfer import BUILD, MAX_BATCH, BuildRequest, BuildResponse

log = logging.getLogger("mercato.builds")

PER_PROVIDER = 4
MAX_FAILURES = 3
PENALTY_CORRUPT = 50.0

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


class BuildService:
    def __init__(self, store: Store, builds: BuildStore, overlay: Overlay) -> None:
        self._store = store
        self.builds = builds
        self._overlay = overlay
        self.fetches: dict[str, FetchState] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer build requests, and keep background fetches, until cancelled."""
        self._overlay.requests.serve(BUILD, self._answer)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def start_fetch(self, cid: str, providers: list[str] | None, pinned: bool) -> FetchState:
        """Fetch in the background (see `fetch`); its progress is in the returned state."""
        check_cid(cid)
        state = self.fetches.setdefault(cid, FetchState(cid))
        if state.finished:

            async def background() -> None:
                try:
                    await self.fetch(cid, providers, pinned)
                except (BuildError, P2PError) as exc:
                    log.warning("fetch failed", extra={"cid": cid, "why": str(exc)})

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
                return BuildResponse(chunks=chunks)
        except UnknownBuild:
            raise Refused("unknown_build", "this node does not have that build") from None
        except BuildError as exc:
            code = "bad_range" if "outside" in str(exc) else "missing"
            raise Refused(code, str(exc)) from None
        raise Refused("bad_request", f"op must be one of manifest, chunks, not {request.op!r}")

    # -- fetching ----------------------------------------------------------------

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
        state.finished, state.error = False, ""
        try:
            info = await self._fetch(
                state, providers if providers is not None else self.providers(), pinned
            )
        except BaseException as exc:
            state.error = str(exc) or type(exc).__name__
            raise
        finally:
            state.finished = True
        return info

    async def _fetch(self, state: FetchState, providers: list[str], pinned: bool) -> BuildInfo:
        cid = state.cid
        info = await self._store.run(self.builds.info, cid)
        if info is None:
            manifest = await self._manifest(cid, providers, state)
            info = await self._store.run(self.builds.begin, manifest, pinned)
        elif pinned and not info.pinned:
            await self._store.run(self.builds.pin, cid)
        manifest = await self._store.run(self.builds.manifest, cid)
        state.size = manifest.size
        failures: dict[str, int] = {}
        while True:
            missing = await self._store.run(self.builds.missing, cid)
            state.done = manifest.size - sum(manifest.chunk_length(i) for i in missing)
            if not missing:
                return await self._store.run(self.builds.info, cid) or info
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

        async with trio.open_nursery() as nursery:
            for peer in providers:
                for _ in range(PER_PROVIDER):
                    nursery.start_soon(worker, peer)

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
