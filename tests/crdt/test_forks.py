"""A publisher that signs two histories: replicas see it, and settle on one."""

from pathlib import Path

import pytest

from mercato.crdt import (
    Equivocation,
    FeedCopy,
    FeedWriter,
    Query,
    Registry,
    RegistryStore,
    SignedUpdate,
    sync_digest,
)
from mercato.node import node_database
from mercato.p2p import Keypair, canonical_cbor

from .test_index import listing


@pytest.fixture
def stores(tmp_path: Path):
    dbs = [node_database(tmp_path / f"node{i}.db") for i in range(3)]
    yield [RegistryStore(db.conn) for db in dbs]
    for db in dbs:
        db.close()


def two_devices(key: Keypair) -> tuple[FeedWriter, FeedWriter, SignedUpdate]:
    """Two writers with the same key (a second device, a restored backup), both
    holding the feed's first update."""
    one, two = FeedWriter(key, Registry()), FeedWriter(key, Registry())
    shared = one.put_listing(listing("shared"))
    two.feed.apply(shared.update, shared.state)
    return one, two, shared


def whole_copy(store: RegistryStore, publisher: str) -> FeedCopy:
    """What a peer serves for the query protocol's ``feed`` operation."""
    copy = FeedCopy(publisher)
    updates, more = store.missing_for({publisher: b""}, 1 << 30, publisher)
    assert not more
    copy.add(updates)
    return copy


def shown(store: RegistryStore) -> set[str]:
    return {r["name"] for r in store.search(Query(limit=100)).results}


def test_two_histories_under_one_state_vector_are_told_apart_and_settled(stores) -> None:
    key = Keypair.generate()
    one, two, shared = two_devices(key)
    a, b, c = stores
    for store in stores:
        store.ingest(shared)
    # Two updates signed on the same state, with the same ids and other content.
    alpha = one.put_listing(listing("alpha", summary="x" * 40))
    beta = two.put_listing(listing("betas", summary="y" * 40))
    assert alpha.deps == beta.deps and alpha.state == beta.state
    a.ingest(alpha)
    b.ingest(beta)
    c.ingest(beta)
    assert a.ingest(beta) == []  # the same state vector: taken for a duplicate
    assert a.states() == b.states()  # what anti-entropy compared: "in step"
    assert sync_digest(a.heads()) != sync_digest(b.heads())
    assert b.forked_with(a.heads()) == a.forked_with(b.heads()) == [key.address]
    # Each side fetches the other's whole copy; both keep the same history.
    copy_of_a, copy_of_b = whole_copy(a, key.address), whole_copy(b, key.address)
    fork_a, fork_b = a.adopt(copy_of_b), b.adopt(copy_of_a)
    assert fork_a is not None and fork_b is not None
    assert fork_a.proven and fork_b.proven
    assert {fork_a.kept, fork_b.kept} == {"ours", "theirs"}
    assert a.heads() == b.heads()
    # The loser's entry is reported lost (its publisher's node writes it again).
    loser, lost, kept = (a, "alpha", "betas") if fork_a.kept == "theirs" else (b, "betas", "alpha")
    assert list((fork_a if loser is a else fork_b).lost["listings"]) == [lost]
    for store in (a, b):
        assert shown(store) == {"shared", kept}  # the index follows the history kept
    # A third replica settles the same way, whichever side it had; then nothing to do.
    c.adopt(whole_copy(a, key.address))
    assert c.heads() == a.heads()
    assert c.adopt(whole_copy(b, key.address)) is None
    # After a restart the journal holds the kept history alone.
    again = RegistryStore(loser.conn)
    assert again.heads() == a.heads() and shown(again) == {"shared", kept}


def test_a_replica_that_is_only_behind_is_not_a_fork(stores) -> None:
    key = Keypair.generate()
    one, _, shared = two_devices(key)
    a, b, _ = stores
    later = one.put_listing(listing("later"))
    for update in (shared, later):
        a.ingest(update)
    b.ingest(shared)
    fork = b.adopt(whole_copy(a, key.address))
    assert fork is not None and fork.kept == "theirs" and not fork.proven
    assert b.heads() == a.heads()
    assert a.adopt(whole_copy(b, key.address)) is None


def test_an_update_written_on_a_state_moved_past_is_the_publishers_equivocation(
    stores,
) -> None:
    key = Keypair.generate()
    one, two, shared = two_devices(key)
    a = stores[0]
    for update in (shared, one.put_listing(listing("alpha")), one.put_listing(listing("gamma"))):
        a.ingest(update)

    # The other device writes three entries in one update on the shared state: it
    # starts before the replica's state and ends past it.
    def three(doc) -> None:
        for name in ("b", "c", "d"):
            doc["listings"][name] = canonical_cbor(listing(name).to_wire())

    late = two._write(three)
    with pytest.raises(Equivocation, match="two different histories"):
        a.ingest(late)
    assert shown(a) == {"shared", "alpha", "gamma"}


def test_forks_of_unequal_length_converge_on_one_history(stores) -> None:
    """The longer history wins, even when a replica of the shorter one took the
    longer one's next update as if it followed its own."""
    key = Keypair.generate()
    one, two, shared = two_devices(key)
    a, b, c = stores
    short = [shared, one.put_listing(listing("alpha")), one.put_listing(listing("gamma"))]
    long = [shared, *(two.put_listing(listing(n)) for n in ("b", "bb", "bbb"))]
    for update in short:
        a.ingest(update)
        c.ingest(update)
    for update in long:
        b.ingest(update)
    a.ingest(long[-1])  # written on state 3 of the other history: it applies
    assert a.states() == b.states() and a.heads() != b.heads()
    copies = {"a": whole_copy(a, key.address), "b": whole_copy(b, key.address)}
    b.adopt(copies["a"])
    a.adopt(copies["b"])
    c.adopt(copies["a"])
    c.adopt(copies["b"])
    assert a.heads() == b.heads() == c.heads()
