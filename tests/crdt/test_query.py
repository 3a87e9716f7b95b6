"""The remote query protocol's checks: what a peer answers is never taken on faith."""

import pytest

from mercato.crdt import (
    FeedWriter,
    QueryError,
    QueryRequest,
    Registry,
    SignedUpdate,
    decode_query_result,
    encode_query_result,
    validate_listing,
    verified_listing,
)
from mercato.p2p import Keypair, canonical_cbor

from .test_index import listing


def test_a_search_result_round_trips_without_its_description() -> None:
    owner = Keypair.generate()
    doc = {
        **listing("echo", description="long words " * 100).to_wire(),
        "publisher": owner.address,
        "version": "1.2.0",
    }
    back = decode_query_result(encode_query_result(doc))
    assert back == {**doc, "description": ""}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {**d, "publisher": "not base58 !"},
        lambda d: {**d, "version": "1.2"},
        lambda d: {**d, "price": -1},
        lambda d: {**d, "extra": 1},
        lambda d: [d],
    ],
)
def test_a_malformed_result_is_a_query_error(mangle) -> None:
    doc = {**listing("echo").to_wire(), "publisher": Keypair.generate().address, "version": None}
    with pytest.raises(QueryError):
        decode_query_result(canonical_cbor(mangle(doc)))
    with pytest.raises(QueryError):
        decode_query_result(b"\xff not cbor")


def test_show_from_a_peer_keeps_only_what_the_publisher_signed() -> None:
    owner, liar = Keypair.generate(), Keypair.generate()
    writer = FeedWriter(owner, Registry())
    honest = [writer.put_listing(listing("echo", price=5)).encode()]
    forged_update = FeedWriter(owner, Registry()).put_listing(listing("echo", price=1))
    forged = SignedUpdate(
        forged_update.publisher,
        forged_update.deps,
        forged_update.state,
        forged_update.update,
        bytes(64),
    )
    other = FeedWriter(liar, Registry()).put_listing(listing("echo", price=0)).encode()
    shown = verified_listing([forged.encode(), other, b"junk", *honest], owner.address, "echo")
    assert shown is not None and shown["price"] == 5 and shown["publisher"] == owner.address
    assert verified_listing([other], owner.address, "echo") is None


def test_search_requests_are_checked_like_local_ones() -> None:
    assert QueryRequest(op="search", text="x", limit=5).query().limit == 5
    with pytest.raises(QueryError):
        QueryRequest(op="search", sort="popular").query()
    with pytest.raises(QueryError):
        QueryRequest(op="delete").query()
    assert validate_listing(listing("x").to_wire())


def test_a_long_feed_comes_whole_in_pages(tmp_path) -> None:
    from mercato.crdt import FeedCopy, RegistryStore
    from mercato.node import node_database

    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    db = node_database(tmp_path / "node.db")
    store = RegistryStore(db.conn)
    for i in range(20):
        store.ingest(writer.put_listing(listing(f"agent-{i}")))
    copy, pages, more = FeedCopy(owner.address), 0, True
    while more:
        updates, more = store.missing_for({owner.address: copy.state()}, 2000, only=owner.address)
        copy.add(updates)
        pages += 1
    assert pages > 3
    assert copy.show("agent-19") == store.show(owner.address, "agent-19")
    db.close()
