import base64
import json
import sqlite3
from pathlib import Path

import pytest

from mercato.crdt import (
    FeedWriter,
    Query,
    QueryError,
    Registry,
    RegistryStore,
    validate_listing,
    validate_release,
)
from mercato.node import node_database
from mercato.p2p import Keypair


def listing(name: str, **extra: object):
    fields = {
        "name": name,
        "kind": "agent",
        "title": name.replace("-", " ").title(),
        "summary": f"The {name} agent.",
        "price": 10,
        "royalty_bps": 100,
    }
    return validate_listing({**fields, **extra})


MODEL = {
    "price": 0,
    "model": {
        "family": "sd",
        "parameters": 900_000_000,
        "quantisation": "F16",
        "context_length": 77,
        "input_price": 100,
        "output_price": 300,
    },
}


@pytest.fixture
def store(tmp_path: Path):
    db = node_database(tmp_path / "node.db")  # the node's real store, migrations and all
    yield RegistryStore(db.conn)
    db.close()


def publish(store: RegistryStore, keypair: Keypair, *listings, releases=()) -> None:
    writer = FeedWriter(keypair, Registry())
    for item in listings:
        store.ingest(writer.put_listing(item))
    for name, version in releases:
        store.ingest(
            writer.put_release(
                validate_release(
                    {"name": name, "version": version, "cid": "b3-" + "c" * 20, "size": 9}
                )
            )
        )


def names(page) -> list[str]:
    return [r["name"] for r in page.results]


def test_text_search_filters_and_sorting(store: RegistryStore) -> None:
    alice, bob = Keypair.generate(), Keypair.generate()
    publish(
        store,
        alice,
        listing(
            "word-count",
            summary="Counts words in text.",
            tags=["text"],
            capabilities=["text.stats"],
            price=5,
        ),
        listing("image-gen", kind="model", summary="Makes images.", tags=["image"], **MODEL),
        releases=[("word-count", "1.0.0"), ("word-count", "1.2.0")],
    )
    publish(store, bob, listing("translator", summary="Translates text.", tags=["text"], price=20))
    assert names(store.search(Query(text="words"))) == ["word-count"]
    assert names(store.search(Query(text="wor"))) == ["word-count"]  # prefix
    assert sorted(names(store.search(Query(tag="text")))) == ["translator", "word-count"]
    assert names(store.search(Query(capability="text.stats"))) == ["word-count"]
    assert names(store.search(Query(kind="model"))) == ["image-gen"]
    # A model has no price per run (it is priced per 1,000 tokens): its price is 0.
    cheap = ["image-gen", "word-count", "translator"]
    assert names(store.search(Query(max_price=20, sort="price"))) == cheap
    assert names(store.search(Query(publisher=bob.address))) == ["translator"]
    found = store.search(Query(text="word count"))
    assert found.results[0]["version"] == "1.2.0" and found.results[0]["publisher"] == alice.address


def test_cursor_pages_through_everything_once(store: RegistryStore) -> None:
    owner = Keypair.generate()
    publish(store, owner, *[listing(f"agent-{i:02d}", price=i % 7) for i in range(23)])
    for sort in ("price", "newest"):
        seen, cursor = [], None
        while True:
            page = store.search(Query(sort=sort, limit=5, cursor=cursor))
            seen += names(page)
            cursor = page.cursor
            if cursor is None:
                break
        assert sorted(seen) == [f"agent-{i:02d}" for i in range(23)], sort
        assert len(seen) == len(set(seen))


def test_deprecated_listings_leave_search(store: RegistryStore) -> None:
    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    store.ingest(writer.put_listing(listing("old-agent")))
    assert names(store.search(Query(text="old"))) == ["old-agent"]
    store.ingest(writer.deprecate("old-agent"))
    assert names(store.search(Query(text="old"))) == []


def test_restart_keeps_the_registry_and_the_index(tmp_path: Path) -> None:
    owner = Keypair.generate()
    db = node_database(tmp_path / "node.db")
    publish(RegistryStore(db.conn), owner, listing("keeper", summary="Stays after restart."))
    db.close()
    again = node_database(tmp_path / "node.db")
    store = RegistryStore(again.conn)
    assert names(store.search(Query(text="restart"))) == ["keeper"]
    assert store.registry.feeds[owner.address].listing("keeper") is not None
    again.close()


@pytest.mark.parametrize(
    "query",
    [
        Query(sort="popular"),
        Query(limit=0),
        Query(limit=1000),
        Query(max_price=-1),
        Query(kind="robot"),
        Query(cursor="not-a-cursor"),
        Query(text="x" * 600),
    ],
)
def test_bad_queries_are_clear_errors(store: RegistryStore, query: Query) -> None:
    with pytest.raises(QueryError):
        store.search(query)


def test_odd_text_never_breaks_the_query(store: RegistryStore) -> None:
    publish(store, Keypair.generate(), listing("safe"))
    for text in ['"', "AND OR NOT", "*", "safe)(", "NEAR(a b)", "ünïcode", "'; DROP TABLE x; --"]:
        store.search(Query(text=text))


def test_waiting_updates_are_not_stored_until_they_apply(store: RegistryStore) -> None:
    writer = FeedWriter(Keypair.generate(), Registry())
    first, second = writer.put_listing(listing("one")), writer.put_listing(listing("two"))

    def journaled() -> int:
        return store.conn.execute("SELECT count(*) FROM registry_updates").fetchone()[0]

    assert store.ingest(second) is None and journaled() == 0
    assert store.ingest(first) == ["listings/one", "listings/two"] and journaled() == 2
    assert sorted(names(store.search(Query()))) == ["one", "two"]


@pytest.mark.parametrize(
    "cursor",
    [
        base64.urlsafe_b64encode(json.dumps(value).encode()).decode()
        for value in ([{"a": 1}, "x", "y"], [10**30, "x", "y"], [1, 2, 3], [True, "x", "y"], "text")
    ],
)
def test_tampered_cursors_are_clear_errors(store: RegistryStore, cursor: str) -> None:
    with pytest.raises(QueryError, match="cursor"):
        store.search(Query(sort="price", cursor=cursor))


def test_an_absurd_price_filter_is_a_clear_error(store: RegistryStore) -> None:
    with pytest.raises(QueryError, match="max price"):
        store.search(Query(max_price=10**30))


def test_restart_after_a_clean_close_keeps_the_index_and_its_order(tmp_path: Path) -> None:
    writer = FeedWriter(Keypair.generate(), Registry())
    db = node_database(tmp_path / "node.db")
    first = RegistryStore(db.conn)
    for name in ("older", "newer"):
        first.ingest(writer.put_listing(listing(name)))
    before = names(first.search(Query(sort="newest")))
    first.close()
    db.close()
    again = node_database(tmp_path / "node.db")
    store = RegistryStore(again.conn)
    assert names(store.search(Query(sort="newest"))) == before == ["newer", "older"]
    # Not closed (a crash): the next start rebuilds the index, keeping the order.
    store.ingest(writer.put_listing(listing("newest")))
    again.close()
    crashed = node_database(tmp_path / "node.db")
    rebuilt = RegistryStore(crashed.conn)
    assert names(rebuilt.search(Query(sort="newest"))) == ["newest", "newer", "older"]
    crashed.close()


def journal_rows(store: RegistryStore, address: str) -> int:
    return store.journal_size(address)


def test_a_publisher_snapshot_compacts_every_journal(tmp_path: Path) -> None:
    from mercato.crdt._index import COMPACT_AFTER

    owner = Keypair.generate()
    author_db, replica_db = node_database(tmp_path / "a.db"), node_database(tmp_path / "r.db")
    author, replica = RegistryStore(author_db.conn), RegistryStore(replica_db.conn)
    writer = FeedWriter(owner, author.registry)
    snapshots = []
    for i in range(COMPACT_AFTER + 5):
        update = writer.put_listing(listing(f"agent-{i}"))
        author.commit_own(update, f"agent-{i}")
        assert replica.ingest(update)
        snapshot = author.compact_own(writer)
        if snapshot is not None:
            snapshots.append(snapshot)
            replica.ingest(snapshot)  # as gossip brings it: a duplicate that compacts
    assert len(snapshots) == 1
    assert journal_rows(author, owner.address) == journal_rows(replica, owner.address) == 5
    # A newcomer asking for everything gets the snapshot and what followed it, nothing more.
    updates, more = replica.missing_for({}, 10**9)
    assert not more and len(updates) == 5
    newcomer_db = node_database(tmp_path / "n.db")
    newcomer = RegistryStore(newcomer_db.conn)
    from mercato.crdt import SignedUpdate

    for outcome in newcomer.ingest_batch([SignedUpdate.decode(u) for u in updates]):
        assert outcome, outcome
    assert newcomer.registry.feeds[owner.address].content() == writer.feed.content()
    # And the compacted journal reloads to the same feed.
    replica_db.close()
    reopened = node_database(tmp_path / "r.db")
    again = RegistryStore(reopened.conn)
    assert again.registry.feeds[owner.address].content() == writer.feed.content()
    for db in (author_db, newcomer_db, reopened):
        db.close()


def test_anti_entropy_sends_only_what_the_other_side_lacks(store: RegistryStore) -> None:
    owner = Keypair.generate()
    publish(store, owner, listing("a"), listing("b"), listing("c"))
    feed = store.registry.feeds[owner.address]
    other = Registry()
    updates, _ = store.missing_for({}, 10**9)
    from mercato.crdt import SignedUpdate

    first = SignedUpdate.decode(updates[0])
    other.apply(first)
    lacking, more = store.missing_for({owner.address: other.feeds[owner.address].state()}, 10**9)
    assert not more and lacking == updates[1:]
    assert store.missing_for({owner.address: feed.state()}, 10**9) == ([], False)
    # A bound gives one update at least, and says more remain.
    page, more = store.missing_for({}, 1)
    assert len(page) == 1 and more


def _sign(keypair: Keypair, deps: bytes, state: bytes, update: bytes):
    from mercato.crdt import SignedUpdate
    from mercato.crdt._feed import SIGN_KIND

    body = {"publisher": keypair.public_key, "deps": deps, "state": state, "update": update}
    return SignedUpdate(**body, sig=keypair.sign(SIGN_KIND, body))


@pytest.mark.parametrize("kind", ["foreign root", "garbage", "other content"])
def test_a_bad_snapshot_of_the_current_state_is_refused_and_compacts_nothing(
    tmp_path: Path, kind: str
) -> None:
    from pycrdt import Doc, Map

    from mercato.crdt import Equivocation, UpdateRejected
    from mercato.crdt._feed import EMPTY_STATE, writer_client_id

    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    db = node_database(tmp_path / "node.db")
    store = RegistryStore(db.conn)
    for i in range(5):
        store.ingest(writer.put_listing(listing(f"l{i}")))
    doc, state = writer.feed.doc, writer.feed.doc.get_state()
    if kind == "foreign root":
        evil = Doc(client_id=12345)
        evil.apply_update(doc.get_update())
        evil["evil"] = Map()
        evil["evil"]["x"] = b"1"
        update = evil.get_update()
    elif kind == "garbage":
        update = b"\x01\x02garbage"
    else:  # the same clocks, other entries: the publisher signed two histories
        other = Doc(client_id=writer_client_id(owner.public_key))
        other["listings"], other["releases"] = Map(), Map()
        for i in range(5):
            from mercato.p2p import canonical_cbor

            other["listings"][f"x{i}"] = canonical_cbor(listing(f"x{i}").to_wire())
        update = other.get_update()
    snapshot = _sign(owner, EMPTY_STATE, state, update)
    expected = Equivocation if kind == "other content" else UpdateRejected
    with pytest.raises(expected):
        store.ingest(snapshot)
    assert store.journal_size(owner.address) == 5
    store.close()
    db.close()
    again = node_database(tmp_path / "node.db")
    reopened = RegistryStore(again.conn)
    assert sorted(reopened.registry.feeds[owner.address].listing_names()) == [
        f"l{i}" for i in range(5)
    ]
    again.close()


def test_a_failed_batch_leaves_memory_as_the_journal_is(tmp_path: Path) -> None:
    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    db = node_database(tmp_path / "node.db")
    store = RegistryStore(db.conn)
    store.ingest(writer.put_listing(listing("a")))
    late = writer.put_listing(listing("b"))
    # A real failure of the journal's write, after the row went in: the rollback must undo it.
    db.conn.execute(
        "CREATE TEMP TRIGGER full AFTER INSERT ON registry_updates "
        "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    )
    with pytest.raises(sqlite3.DatabaseError, match="disk full"):
        store.ingest(late)
    db.conn.execute("DROP TRIGGER full")
    assert store.registry.feeds[owner.address].listing_names() == ["a"]
    assert store.journal_size(owner.address) == 1
    assert store.ingest(late) == ["listings/b"]  # redelivered, it is news again
    assert names(store.search(Query())) == ["b", "a"]
    db.close()


def test_a_write_after_close_makes_the_next_start_rebuild_the_index(tmp_path: Path) -> None:
    writer = FeedWriter(Keypair.generate(), Registry())
    db = node_database(tmp_path / "node.db")
    store = RegistryStore(db.conn)
    store.ingest(writer.put_listing(listing("early")))
    store.close()
    store.ingest(writer.put_listing(listing("late")))  # gossip still running at shutdown
    db.close()
    again = node_database(tmp_path / "node.db")
    assert sorted(names(RegistryStore(again.conn).search(Query()))) == ["early", "late"]
    again.close()


def test_a_search_over_its_time_budget_is_refused_not_slow(store: RegistryStore) -> None:
    writer = FeedWriter(Keypair.generate(), Registry())
    store.ingest_batch([writer.put_listing(listing(f"agent-{i}")) for i in range(300)])
    assert len(store.search(Query(text="agent", limit=100)).results) == 100
    with pytest.raises(QueryError, match="took too long"):
        store.search(Query(text="agent", limit=100), budget_s=0.0)
    assert len(store.search(Query(text="agent", limit=5)).results) == 5  # handler removed


def test_release_cids_follow_the_registry(store: RegistryStore) -> None:
    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    store.ingest(writer.put_listing(listing("a")))
    assert store.release_cids() == set()

    def release(version: str, cid: str):
        fields = {"name": "a", "version": version, "cid": cid, "size": 5}
        return writer.put_release(validate_release(fields))

    store.ingest(release("1.0.0", "bld-" + "1" * 64))
    assert store.release_cids() == {"bld-" + "1" * 64}
    store.ingest(release("1.1.0", "bld-" + "2" * 64))  # arrives after the first computation
    assert store.release_cids() == {"bld-" + "1" * 64, "bld-" + "2" * 64}


def test_a_damaged_journal_entry_is_reported_removed_and_fetched_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from mercato.crdt import SignedUpdate

    owner = Keypair.generate()
    author_db, peer_db = node_database(tmp_path / "a.db"), node_database(tmp_path / "p.db")
    author, peer = RegistryStore(author_db.conn), RegistryStore(peer_db.conn)
    writer = FeedWriter(owner, author.registry)
    for i in range(5):
        update = writer.put_listing(listing(f"agent-{i}"))
        author.commit_own(update, f"agent-{i}")
        assert peer.ingest(update)
    author.close()
    # One flipped byte in the body of the third update, as a bad disk would leave it.
    sig, body = author_db.conn.execute(
        "SELECT sig, body FROM registry_updates WHERE clock = ("
        "  SELECT clock FROM registry_updates ORDER BY clock LIMIT 1 OFFSET 2)"
    ).fetchone()
    flipped = bytearray(body)
    flipped[-40] ^= 0x01
    author_db.conn.execute("UPDATE registry_updates SET body = ? WHERE sig = ?", (flipped, sig))
    author_db.close()

    reopened = node_database(tmp_path / "a.db")
    with caplog.at_level("ERROR", logger="mercato.registry"):
        again = RegistryStore(reopened.conn)
    (damaged,) = again.damaged
    assert damaged.publisher == owner.address
    assert f"update of {owner.address} at clock {damaged.clock} is damaged" in caplog.text
    assert len(again.registry.feeds[owner.address].listing_names()) < 5  # not silently whole
    # Anti-entropy brings back what the journal lost, from a peer that has it.
    lacking = {owner.address: again.registry.feeds[owner.address].state()}
    updates, _ = peer.missing_for(lacking, 10**9)
    again.ingest_batch([SignedUpdate.decode(u) for u in updates])
    assert sorted(again.registry.feeds[owner.address].listing_names()) == [
        f"agent-{i}" for i in range(5)
    ]
    reopened.close()
    peer_db.close()


def test_a_model_listing_keeps_its_model_through_search_and_show(store: RegistryStore) -> None:
    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    store.ingest(writer.put_listing(listing("tiny-chat", kind="model", **MODEL)))
    assert store.release_cids() == set()  # computed: kept up to date from here
    store.ingest(writer.put_release(validate_release({"name": "tiny-chat", "version": "1.0.0"})))
    (found,) = store.search(Query(kind="model")).results
    assert found["kind"] == "model" and found["version"] == "1.0.0"
    assert found["model"] == {**MODEL["model"], "weights": ""}  # type: ignore[dict-item]
    shown = store.show(owner.address, "tiny-chat")
    assert shown is not None and shown["model"] == found["model"]
    assert shown["releases"][0]["cid"] == "" and store.release_cids() == set()
    assert validate_listing({k: v for k, v in shown.items() if k not in ("publisher", "releases")})
    from mercato.crdt import decode_query_result, encode_query_result

    assert decode_query_result(encode_query_result(found))["model"] == found["model"]


def _raw_update(keypair: Keypair, base: bytes, key: str, value: bytes):
    """The publisher writes ``value`` under ``key`` past FeedWriter's checks."""
    from pycrdt import Doc, Map

    from mercato.crdt._feed import writer_client_id

    doc = Doc(client_id=writer_client_id(keypair.public_key))
    doc["listings"], doc["releases"] = Map(), Map()
    doc.apply_update(base)
    before = doc.get_state()
    doc["listings"][key] = value
    return _sign(keypair, before, doc.get_state(), doc.get_update(before))


def test_a_batch_with_an_update_failing_the_schema_rolls_back_only_that_one(
    tmp_path: Path,
) -> None:
    from mercato.crdt import UpdateRejected
    from mercato.p2p import canonical_cbor

    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    db = node_database(tmp_path / "node.db")
    store = RegistryStore(db.conn)
    first = writer.put_listing(listing("a"))
    good = writer.put_listing(listing("b"))
    # Signed by the publisher on the state after ``good``, but its content is no listing.
    bad = _raw_update(owner, writer.feed.update_since(), "c", canonical_cbor({"name": "c"}))
    outcomes = store.ingest_batch([first, good, bad])
    assert outcomes[:2] == [["listings/a"], ["listings/b"]]
    assert isinstance(outcomes[2], UpdateRejected) and "'kind': is required" in str(outcomes[2])
    feed = store.registry.feeds[owner.address]
    held = (feed.state(), feed.content_hash(), feed.content())
    assert held == (writer.feed.state(), writer.feed.content_hash(), writer.feed.content())
    assert store.journal_size(owner.address) == 2
    assert names(store.search(Query())) == ["b", "a"]
    # Again alone: still refused, and nothing moves.
    with pytest.raises(UpdateRejected, match="'kind': is required"):
        store.ingest(bad)
    assert (feed.state(), feed.content_hash(), feed.content()) == held
    assert store.registry.feeds[owner.address] is feed
    # The publisher's next good update (on the same state) still applies, and is stored.
    assert store.ingest(writer.put_listing(listing("d"))) == ["listings/d"]
    assert store.journal_size(owner.address) == 3
    assert sorted(names(store.search(Query()))) == ["a", "b", "d"]
    assert store.registry.feeds[owner.address].content_hash() == writer.feed.content_hash()
    db.close()
    # What was stored replays to the same feed.
    again = node_database(tmp_path / "node.db")
    replayed = RegistryStore(again.conn).registry.feeds[owner.address]
    assert replayed.content_hash() == writer.feed.content_hash()
    again.close()


def test_migration_12_keys_the_journal_by_feed_and_keeps_every_update(tmp_path: Path) -> None:
    from mercato.crdt import SignedUpdate
    from mercato.crdt._index import JOURNAL_KEYED, journal_append
    from mercato.node import MIGRATIONS, SCHEMA_VERSION, Database

    path = tmp_path / "node.db"
    before = MIGRATIONS[: MIGRATIONS.index(JOURNAL_KEYED)]
    old = Database(path, before)  # a store of the schema before migration 12
    assert old.schema_version == SCHEMA_VERSION - 1
    store = RegistryStore(old.conn)
    owner, other = Keypair.generate(), Keypair.generate()
    publish(store, owner, listing("a"), listing("b", summary="Second of its feed."))
    writer = FeedWriter(other, Registry())
    first, second = writer.put_listing(listing("c")), writer.put_listing(listing("d"))
    store.ingest_batch([first, second])
    # A row journaled before clocks were (migration 4): its clock is found on load.
    old.conn.execute("UPDATE registry_updates SET clock = -1 WHERE sig = ?", (second.sig,))
    store.close()
    rows = old.conn.execute(
        "SELECT sig, publisher, body, received FROM registry_updates ORDER BY sig"
    ).fetchall()
    old.close()

    db = node_database(path)
    assert db.schema_version == SCHEMA_VERSION
    assert [tuple(r) for r in rows] == [
        tuple(r)
        for r in db.conn.execute(
            "SELECT sig, publisher, body, received FROM registry_updates ORDER BY sig"
        )
    ]
    indexes = {
        r[0]
        for r in db.conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'registry_updates'"
        )
    }
    assert indexes == {"registry_updates_feed"}
    store = RegistryStore(db.conn)
    assert store.damaged == []
    assert store.journal_size(owner.address) == 2 and store.journal_size(other.address) == 2
    assert (
        db.conn.execute(
            "SELECT clock FROM registry_updates WHERE sig = ?", (second.sig,)
        ).fetchone()[0]
        == second.clock
    )
    assert names(store.search(Query(text="second"))) == ["b"]
    assert store.ingest(second) == [] and store.ingest_batch([first]) == [[]]  # duplicates
    assert store.journal_size(other.address) == 2
    # An update is journaled once; another signed at the same clock (a fork) is its own row.
    assert not journal_append(db.conn, second)
    fork = FeedWriter(owner, Registry()).put_listing(listing("z"))
    assert fork.clock == 1 and journal_append(db.conn, fork) and not journal_append(db.conn, fork)
    db.conn.execute("DELETE FROM registry_updates WHERE sig = ?", (fork.sig,))
    updates, more = store.missing_for({}, 10**9, only=other.address)
    assert not more and [SignedUpdate.decode(u).sig for u in updates] == [first.sig, second.sig]
    store.ingest(writer.put_listing(listing("e")))
    assert store.journal_size(other.address) == 3
    # Every query on the journal by feed uses the one index.
    for sql, args in (
        (
            "SELECT body FROM registry_updates WHERE publisher = ? AND clock > ? ORDER BY clock",
            (other.address, 1),
        ),
        (
            "DELETE FROM registry_updates WHERE publisher = ? AND clock <= ? AND sig != ?",
            (other.address, 1, b""),
        ),
        ("SELECT COUNT(*) FROM registry_updates WHERE publisher = ?", (other.address,)),
    ):
        plan = " ".join(str(r[3]) for r in db.conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert "registry_updates_feed" in plan, (sql, plan)
    db.close()
