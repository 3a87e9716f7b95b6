"""Builds: stored by content, fetched from several peers, verified chunk by chunk."""

import itertools
import os
from pathlib import Path

import pytest
import trio

from mercato.node import Database, node_database
from mercato.node.builds._store import (
    CHUNK_SIZE,
    BadManifest,
    BuildError,
    BuildStore,
    Manifest,
    QuotaExceeded,
    manifest_of,
)
from mercato.node.builds._transfer import BUILD, BuildRequest, BuildResponse

from .test_registry_network import running_nodes

WORDCOUNT = Path(__file__).parents[2] / "runtime" / "examples" / "wordcount" / "wordcount.wasm"


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def padded_wasm(path: Path, size: int) -> Path:
    """A real, runnable module (the wordcount example) grown to about ``size`` bytes
    by a custom section of random bytes: a big build that still compiles."""
    module = WORDCOUNT.read_bytes()
    name = b"padding"
    payload = os.urandom(max(0, size - len(module) - 16))
    body = _leb128(len(name)) + name + payload
    path.write_bytes(module + b"\x00" + _leb128(len(body)) + body)
    return path


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def open_node_store(tmp_path: Path, quota: int = 1 << 30) -> tuple[Database, BuildStore]:
    db = node_database(tmp_path / "node.db")
    return db, BuildStore(db.conn, tmp_path / "blobs", quota)


def test_a_build_is_stored_by_content_and_kept_across_restarts(tmp_path: Path) -> None:
    source = random_file(tmp_path / "agent.wasm", 3 * CHUNK_SIZE + 123)
    db, store = open_node_store(tmp_path)
    info = store.add_file(source)
    assert info.cid == manifest_of(source).cid and info.complete and info.pinned
    assert store.add_file(source).cid == info.cid  # the same bytes, the same build
    assert b"".join(store.read_chunks(info.cid, 0, 4)) == source.read_bytes()
    db.close()
    db, again = open_node_store(tmp_path)
    assert again.info(info.cid) == info
    assert again.gc() == [] and again.info(info.cid) is not None  # pinned: kept
    again.pin(info.cid, False)
    assert again.gc() == [info.cid] and again.info(info.cid) is None
    assert not again.path(info.cid).exists()
    db.close()


def test_only_matching_bytes_are_stored_or_served(tmp_path: Path) -> None:
    source = random_file(tmp_path / "agent.wasm", 2 * CHUNK_SIZE)
    manifest = manifest_of(source)
    db, store = open_node_store(tmp_path)
    store.begin(manifest)
    data = source.read_bytes()
    good, bad = data[:CHUNK_SIZE], b"\0" * CHUNK_SIZE
    assert store.write_chunks(manifest.cid, {0: good, 1: bad}) == [1]
    assert store.missing(manifest.cid) == [1]
    with pytest.raises(BuildError):
        store.read_chunks(manifest.cid, 0, 2)  # chunk 1 is not here
    with pytest.raises(BuildError, match="outside"):
        store.read_chunks(manifest.cid, 1, 4)
    assert store.write_chunks(manifest.cid, {1: data[CHUNK_SIZE:]}) == []
    with open(store.path(manifest.cid), "r+b") as f:  # the disk rots
        f.seek(10)
        f.write(b"rot")
    with pytest.raises(BuildError, match="damaged"):
        store.read_chunks(manifest.cid, 0, 1)
    assert store.missing(manifest.cid) == [0]  # forgotten: it will be fetched again
    db.close()


def test_manifests_are_checked_against_their_id(tmp_path: Path) -> None:
    manifest = Manifest(10, (b"x" * 32,))
    assert Manifest.decode(manifest.encode(), manifest.cid) == manifest
    with pytest.raises(BadManifest, match="not the one"):
        Manifest.decode(manifest.encode(), "bld-" + "0" * 64)
    with pytest.raises(BadManifest):
        Manifest.decode(Manifest(10, (b"x" * 32, b"y" * 32)).encode())
    with pytest.raises(BadManifest):
        Manifest.decode(b"\xff junk")


def test_the_quota_is_a_clear_error_and_changes_nothing(tmp_path: Path) -> None:
    db, store = open_node_store(tmp_path, quota=CHUNK_SIZE)
    with pytest.raises(QuotaExceeded, match="quota"):
        store.add_file(random_file(tmp_path / "big.wasm", 2 * CHUNK_SIZE))
    assert store.list_builds() == [] and list((tmp_path / "blobs").iterdir()) == []
    db.close()


@pytest.mark.slow
async def test_a_fetch_completes_from_honest_peers_past_a_corrupt_one(tmp_path: Path) -> None:
    source = random_file(tmp_path / "agent.wasm", 12 * CHUNK_SIZE + 5)
    async with running_nodes(tmp_path, 4) as (user, honest1, honest2, liar):
        for holder in (honest1, honest2, liar):
            await holder.store.run(holder.builds.builds.add_file, source)
        cid = manifest_of(source).cid

        async def corrupt(peer: str, request: BuildRequest) -> BuildResponse:
            answer = await liar.builds._answer(peer, request)
            return BuildResponse(
                manifest=answer.manifest, chunks=[b"\1" * len(c) for c in answer.chunks]
            )

        liar.overlay.requests.serve(BUILD, corrupt)
        peers = []
        for holder in (honest1, honest2, liar):
            peers.append(await user.overlay.host.connect(holder.overlay.host.listen_addrs()[0]))
        # The liar alone: caught at its first chunk, nothing of it kept.
        with pytest.raises(BuildError, match="no provider"):
            await user.builds.fetch(cid, [peers[2]])
        assert user.builds.fetches[cid].bad == {peers[2]}
        assert len(await user.store.run(user.builds.builds.missing, cid)) == 13
        # With honest peers too: the fetch completes, the liar is not asked again.
        served = liar.overlay.requests.statistics().bytes_out[BUILD.id]
        info = await user.builds.fetch(cid, peers)
        assert info.complete
        assert (
            b"".join(await user.store.run(user.builds.builds.read_chunks, cid, 0, info.chunks))
            == source.read_bytes()
        )
        assert liar.overlay.requests.statistics().bytes_out[BUILD.id] == served


@pytest.mark.slow
async def test_an_interrupted_fetch_resumes_instead_of_starting_over(tmp_path: Path) -> None:
    source = random_file(tmp_path / "agent.wasm", 24 * CHUNK_SIZE)
    async with running_nodes(tmp_path, 2) as (user, holder):
        await holder.store.run(holder.builds.builds.add_file, source)
        cid = manifest_of(source).cid
        peer = await user.overlay.host.connect(holder.overlay.host.listen_addrs()[0])
        with trio.move_on_after(30) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(user.builds.fetch, cid, [peer])
                while True:  # stop it half way
                    state = user.builds.fetches.get(cid)
                    if state is not None and state.size and state.done >= state.size // 2:
                        nursery.cancel_scope.cancel()
                        break
                    await trio.sleep(0.005)
        assert not scope.cancelled_caught
        left = len(await user.store.run(user.builds.builds.missing, cid))
        assert 0 < left < 24
        served = holder.overlay.requests.statistics().bytes_out[BUILD.id]
        info = await user.builds.fetch(cid, [peer])
        assert info.complete
        resent = holder.overlay.requests.statistics().bytes_out[BUILD.id] - served
        assert resent < (left + 4) * CHUNK_SIZE  # what was missing, not the whole build


async def until(condition, within: float) -> None:
    """Poll ``condition`` (state a background task updates) until true; fail after ``within``."""
    with trio.fail_after(within):
        for _ in itertools.count():
            if condition():
                return
            await trio.sleep(0.005)


async def connect_all(nodes) -> None:
    for i, a in enumerate(nodes):
        for b in nodes[i + 1 :]:
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])


async def holders(nodes, cid: str) -> set[str]:
    out = set()
    for node in nodes:
        info = await node.store.run(node.builds.builds.info, cid)
        if info is not None and info.complete:
            out.add(node.overlay.peer_id)
    return out


async def wait_until_held(nodes, cid: str, expected: set[str], within: float) -> None:
    with trio.fail_after(within):
        held = await holders(nodes, cid)
        while not expected <= held:
            await trio.sleep(0.1)  # copies arrive in the background; look again
            held = await holders(nodes, cid)


@pytest.mark.slow
async def test_a_release_lands_on_the_closest_peers_and_is_repaired(tmp_path: Path) -> None:
    from mercato.node.builds._service import responsible

    source = padded_wasm(tmp_path / "big.wasm", 50 * 1024 * 1024)
    cid = manifest_of(source).cid
    async with running_nodes(tmp_path, 10, repair_interval_s=1.0) as nodes:
        await connect_all(nodes)
        closest = responsible(cid, [n.overlay.peer_id for n in nodes], 4)
        creator = next(n for n in nodes if n.overlay.peer_id not in closest)
        await creator.registry.publish(
            "default",
            {
                "name": "big",
                "kind": "agent",
                "title": "Big",
                "summary": "A big agent.",
                "price": 0,
                "royalty_bps": 0,
            },
        )
        shown = await creator.api.registry.release(
            "default", {"name": "big", "version": "1.0.0"}, source
        )
        assert shown.model_dump()["releases"][0]["cid"] == cid
        everyone = [n.overlay.peer_id for n in nodes]
        duty = responsible(cid, everyone, 3)
        await wait_until_held(nodes, cid, set(duty), within=60)

        lost = next(n for n in nodes if n.overlay.peer_id in duty and n is not creator)
        lost.request_stop()
        alive = [n for n in nodes if n is not lost]
        new_duty = responsible(cid, [n.overlay.peer_id for n in alive], 3)
        newcomer = set(new_duty) - set(duty)
        assert newcomer and not newcomer & await holders(alive, cid)  # a copy to make
        await wait_until_held(alive, cid, set(new_duty), within=30)
        for node in alive:  # every copy is the build, byte for byte
            if node.overlay.peer_id in new_duty:
                assert not await node.store.run(node.builds.builds.verify, cid)


@pytest.mark.slow
async def test_a_peer_lying_about_its_copy_never_makes_others_drop_theirs(tmp_path: Path) -> None:
    from mercato.node.builds._service import responsible

    async with running_nodes(tmp_path, 2, replicas=1, repair_interval_s=3600) as (honest, liar):
        await honest.overlay.host.connect(liar.overlay.host.listen_addrs()[0])
        peers = [honest.overlay.peer_id, liar.overlay.peer_id]
        for attempt in range(64):  # a build whose one keeper is the liar
            source = random_file(tmp_path / f"b{attempt}.wasm", CHUNK_SIZE + attempt + 1)
            if responsible(manifest_of(source).cid, peers, 1) == [liar.overlay.peer_id]:
                break
        cid = manifest_of(source).cid
        await honest.store.run(honest.builds.builds.add_file, source, False)  # unpinned

        async def lie(peer: str, request: BuildRequest) -> BuildResponse:
            if request.op == "have":
                return BuildResponse(have=2, total=2)
            if request.op == "chunks":
                return BuildResponse(chunks=[b"\0" * CHUNK_SIZE] * request.count)
            return await liar.builds._answer(peer, request)

        liar.overlay.requests.serve(BUILD, lie)
        honest.builds._last_released = {cid}
        done = await honest.builds.repair_once()
        assert done["dropped"] == []
        assert (await honest.store.run(honest.builds.builds.info, cid)).complete
        assert await honest.builds.copies(cid) == []


@pytest.mark.slow
async def test_a_build_removed_mid_fetch_ends_the_fetch_not_the_node(tmp_path: Path) -> None:
    source = random_file(tmp_path / "agent.wasm", 40 * CHUNK_SIZE)
    cid = manifest_of(source).cid
    async with running_nodes(tmp_path, 2, repair_interval_s=3600) as (user, holder):
        await holder.store.run(holder.builds.builds.add_file, source)
        peer = await user.overlay.host.connect(holder.overlay.host.listen_addrs()[0])
        state = user.builds.start_fetch(cid, [peer], False)
        await until(lambda: state.done > 0, 20)
        await user.store.run(user.builds.builds.remove, cid)
        await until(lambda: state.finished, 20)
        assert state.error
        assert (await user.store.run(user.builds.builds.info, cid)) is None
        assert user.overlay.host.connected_peers()  # the node runs on


@pytest.mark.slow
async def test_a_build_a_user_fetched_unpinned_is_not_dropped_by_the_next_repair(
    tmp_path: Path,
) -> None:
    # The holder keeps the build (replicas 1) and the user is not responsible for it:
    # the repair loop would drop the user's copy as soon as the keeper holds one,
    # right under `mercato builds fetch`, which then reported a fetch that worked
    # as incomplete.
    from mercato.node.builds._service import responsible

    async with running_nodes(tmp_path, 2, replicas=1, repair_interval_s=3600) as (user, holder):
        peer = await user.overlay.host.connect(holder.overlay.host.listen_addrs()[0])
        peers = [user.overlay.peer_id, holder.overlay.peer_id]
        for attempt in range(64):  # a build whose one keeper is the holder
            source = random_file(tmp_path / f"b{attempt}.wasm", CHUNK_SIZE + attempt + 1)
            if responsible(manifest_of(source).cid, peers, 1) == [holder.overlay.peer_id]:
                break
        cid = manifest_of(source).cid
        await holder.store.run(holder.builds.builds.add_file, source)
        state = user.builds.start_fetch(cid, [peer], False)
        await until(lambda: state.finished, 20)
        assert not state.error
        done = await user.builds.repair_once()
        assert cid not in done["dropped"]
        assert (await user.store.run(user.builds.builds.info, cid)).complete
