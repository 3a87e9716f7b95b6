import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map

from mercato.crdt import (
    Equivocation,
    FeedWriter,
    Registry,
    ReleaseExists,
    SchemaError,
    SignedUpdate,
    UpdateRejected,
    validate_listing,
    validate_release,
)
from mercato.crdt._feed import MAX_SNAPSHOT_BYTES, MAX_UPDATE_BYTES, SIGN_KIND, writer_client_id
from mercato.p2p import Keypair, canonical_cbor


def listing(name: str, price: int = 10, **extra: object):
    return validate_listing(
        {
            "name": name,
            "kind": "agent",
            "title": name.title(),
            "summary": f"The {name} agent.",
            "price": price,
            "royalty_bps": 100,
            **extra,
        }
    )


def release(name: str, version: str):
    return validate_release(
        {"name": name, "version": version, "cid": "b3-" + "a" * 20, "size": 100}
    )


def snapshot(registry: Registry) -> dict:
    return {
        a: (f.listings(), f.releases())
        for a, f in sorted(registry.feeds.items())
        if f.listings() or f.releases()
    }


def test_a_replica_receives_what_the_publisher_wrote() -> None:
    author, replica = Registry(), Registry()
    writer = FeedWriter(Keypair.generate(), author)
    updates = [writer.put_listing(listing("echo")), writer.put_release(release("echo", "1.0.0"))]
    updates.append(writer.deprecate("echo"))
    for update in updates:
        replica.apply(SignedUpdate.decode(update.encode()))  # as it travels
    assert snapshot(replica) == snapshot(author)
    assert replica.feeds[writer.feed.address].listings()["echo"].deprecated
    assert replica.apply(updates[0]) == []  # a duplicate changes nothing


def _signed_raw(
    keypair: Keypair, write, base: bytes = b"", client_id: int | None = None, state=None
):
    """A publisher writing its doc past FeedWriter's checks (a buggy or hostile client)."""
    doc = Doc(
        client_id=client_id if client_id is not None else writer_client_id(keypair.public_key)
    )
    doc["listings"], doc["releases"] = Map(), Map()
    if base:
        doc.apply_update(base)
    before = doc.get_state()
    write(doc)
    update = doc.get_update(before)
    after = doc.get_state() if state is None else state
    body = {"publisher": keypair.public_key, "deps": before, "state": after, "update": update}
    return SignedUpdate(**body, sig=keypair.sign(SIGN_KIND, body))


def test_bad_updates_are_rejected_and_change_nothing() -> None:
    owner, other = Keypair.generate(), Keypair.generate()
    replica = Registry()
    good = FeedWriter(owner, Registry()).put_listing(listing("echo"))
    replica.apply(good)
    base = good.update
    before = snapshot(replica), replica.feeds[owner.address].state()

    def entry(key: str, value: object):
        return lambda d: d["listings"].__setitem__(key, value)

    forged = SignedUpdate(good.publisher, good.deps, good.state, good.update, bytes(64))
    stolen = SignedUpdate(other.public_key, good.deps, good.state, good.update, good.sig)
    shape = _signed_raw(owner, entry("fresh", canonical_cbor(listing("fresh").to_wire())), base)
    garbage_body = {**shape.body(), "update": b"\xff\xfe garbage"}
    garbage = SignedUpdate(**garbage_body, sig=owner.sign(SIGN_KIND, garbage_body))
    cases = [
        (forged, "signature"),
        (stolen, "signature"),
        (
            _signed_raw(owner, entry("x", canonical_cbor({"name": "x"})), base),
            "'kind': is required",
        ),
        (
            _signed_raw(owner, entry("y", canonical_cbor(listing("z").to_wire())), base),
            "stored under",
        ),
        (
            _signed_raw(
                owner,
                lambda d: d["releases"].__setitem__(
                    "echo@1.0",
                    canonical_cbor({**release("echo", "1.0.0").to_wire(), "version": "1.0"}),
                ),
                base,
            ),
            "'version'",
        ),
        (_signed_raw(owner, entry("fresh", "plain text"), base), "CBOR"),
        (garbage, "decode"),
        (SignedUpdate(owner.public_key, good.state, b"", bytes(MAX_UPDATE_BYTES + 1), b""), "over"),
        (SignedUpdate(owner.public_key, b"", b"", bytes(MAX_SNAPSHOT_BYTES + 1), b""), "over"),
        (
            _signed_raw(
                owner, entry("fresh", canonical_cbor(listing("fresh").to_wire())), base, client_id=7
            ),
            "client",
        ),
        (
            _signed_raw(
                owner,
                entry("fresh", canonical_cbor(listing("fresh").to_wire())),
                base,
                state=good.state + b"",
            ),
            "extend",
        ),
        (
            _signed_raw(
                owner,
                lambda d: (
                    d["junk"].__setitem__("k", 1) if False else d.__setitem__("junk", Map({"k": 1}))
                ),
                base,
            ),
            "outside",
        ),
        (
            _signed_raw(  # written on an empty feed by a device that never synced
                owner,
                lambda d: (
                    d["listings"].__setitem__("e1", canonical_cbor(listing("e1").to_wire())),
                    d["listings"].__setitem__("e2", canonical_cbor(listing("e2").to_wire())),
                ),
            ),
            "two different histories",
        ),
    ]
    for bad, why in cases:
        with pytest.raises(UpdateRejected, match=why):
            replica.apply(bad)
        assert (snapshot(replica), replica.feeds[owner.address].state()) == before, why
    with pytest.raises(UpdateRejected):
        SignedUpdate.decode(b"\xa1\x61x\x01")
    assert set(replica.feeds) == {owner.address}  # a rejected newcomer leaves no feed behind


def test_a_write_from_a_device_behind_the_feed_is_refused() -> None:
    owner = Keypair.generate()
    author, replica = Registry(), Registry()
    writer = FeedWriter(owner, author)
    first = writer.put_listing(listing("a"))
    for update in (first, writer.put_listing(listing("b"))):
        replica.apply(update)
    stale = _signed_raw(  # a second device that saw only the first write
        owner,
        lambda d: (
            d["listings"].__setitem__("c", canonical_cbor(listing("c").to_wire())),
            d["listings"].__setitem__("d", canonical_cbor(listing("d").to_wire())),
        ),
        first.update,
    )
    with pytest.raises(UpdateRejected, match="moved past"):
        replica.apply(stale)
    assert sorted(replica.feeds[owner.address].listings()) == ["a", "b"]


def test_a_snapshot_replaces_nothing_it_contradicts() -> None:
    owner = Keypair.generate()
    author, replica = Registry(), Registry()
    writer = FeedWriter(owner, author)
    updates = [writer.put_listing(listing(n)) for n in ("a", "b", "c")]
    snap = writer.snapshot()
    assert snap.is_snapshot and snap.clock == updates[-1].clock
    replica.apply(updates[0])
    assert [u for u, _ in replica.apply(snap)] == [snap]  # applies on an earlier state
    assert snapshot(replica) == snapshot(author)
    assert replica.apply(updates[1]) == []  # covered by the snapshot


def test_a_signed_state_that_lies_is_refused() -> None:
    owner = Keypair.generate()
    replica = Registry()
    good = FeedWriter(owner, Registry()).put_listing(listing("echo"))
    lie = _signed_raw(
        owner,
        lambda d: d["listings"].__setitem__("echo", canonical_cbor(listing("echo").to_wire())),
        state=b"\x01" + good.state[1:-1] + b"\x09",  # claims more than the update holds
    )
    with pytest.raises(UpdateRejected, match="not the state it was signed with"):
        replica.apply(lie)


def test_updates_out_of_order_wait_for_their_predecessors() -> None:
    author = Registry()
    writer = FeedWriter(Keypair.generate(), author)
    u1 = writer.put_listing(listing("echo"))
    u2 = writer.put_release(release("echo", "1.0.0"))
    u3 = writer.put_listing(listing("echo", price=3))
    replica = Registry()
    assert replica.apply(u3) is None and replica.apply(u2) is None  # waiting
    assert replica.pending(writer.feed.address) == 2
    applied = replica.apply(u1)
    assert [update for update, _ in applied] == [u1, u2, u3]
    assert [entries for _, entries in applied] == [
        ["listings/echo"],
        ["releases/echo@1.0.0"],
        ["listings/echo"],
    ]
    assert replica.pending(writer.feed.address) == 0
    assert snapshot(replica) == snapshot(author)
    assert replica.feeds[writer.feed.address].listings()["echo"].price == 3


def test_state_vectors_decode_as_pycrdt_encodes_them() -> None:
    from mercato.crdt._feed import decode_state_vector

    a, b = Doc(), Doc()
    a["m"] = Map()
    a["m"]["x"] = 1
    b["m"] = Map()
    b.apply_update(a.get_update())
    b["m"]["y"] = 2
    assert decode_state_vector(b.get_state()) == {a.client_id: 1, b.client_id: 1}
    for bad in (b"\x05", b"\x01\x80", b"\x01\x01\x01\x00"):
        with pytest.raises(ValueError):
            decode_state_vector(bad)


def test_a_release_that_arrives_before_its_listing_converges() -> None:
    author = Registry()
    writer = FeedWriter(Keypair.generate(), author)
    first, second = (
        writer.put_listing(listing("echo")),
        writer.put_release(release("echo", "1.0.0")),
    )
    early, late = Registry(), Registry()
    for update in (second, first):
        early.apply(update)
    for update in (first, second):
        late.apply(update)
    assert snapshot(early) == snapshot(late) == snapshot(author)
    with pytest.raises(Exception, match="before releasing"):
        FeedWriter(Keypair.generate(), Registry()).put_release(release("ghost", "1.0.0"))


def test_the_valid_update_after_a_rejected_one_still_applies() -> None:
    owner = Keypair.generate()
    author, replica = Registry(), Registry()
    writer = FeedWriter(owner, author)
    first = writer.put_listing(listing("a"))
    replica.apply(first)
    with pytest.raises(UpdateRejected):
        replica.apply(
            _signed_raw(owner, lambda d: d["listings"].__setitem__("b", b"\x00"), first.update)
        )
    replica.apply(writer.put_listing(listing("c")))
    assert sorted(replica.feeds[owner.address].listings()) == ["a", "c"]


names = st.sampled_from(["echo", "wordcount", "summarize", "translate"])
operations = st.lists(
    st.tuples(st.sampled_from(["listing", "release", "deprecate"]), names, st.integers(0, 5)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(operations, min_size=1, max_size=3),
    st.integers(1, 4),
    st.randoms(use_true_random=False),
)
def test_replicas_converge_whatever_the_order_duplication_or_loss(
    writes: list, replicas: int, rng: random.Random
) -> None:
    author = Registry()
    updates: list[SignedUpdate] = []
    for ops in writes:
        writer = FeedWriter(Keypair.generate(), author)
        for op, name, n in ops:
            try:
                if op == "listing":
                    updates.append(writer.put_listing(listing(name, price=n)))
                elif op == "release":
                    updates.append(writer.put_release(release(name, f"1.{n}.0")))
                else:
                    updates.append(writer.deprecate(name))
            except Exception:
                continue
    registries = [Registry() for _ in range(replicas)]
    for registry in registries:
        delivered = [u for u in updates if rng.random() > 0.3] * rng.randint(
            1, 2
        )  # lossy, duplicated
        rng.shuffle(delivered)
        for update in delivered:
            registry.apply(update)
        rest = list(updates)  # anti-entropy: eventually everything arrives, in any order
        rng.shuffle(rest)
        for update in rest:
            registry.apply(update)
    expected = snapshot(author)
    for registry in registries:
        assert snapshot(registry) == expected


def _rebind(writer: FeedWriter, key: str, value: object) -> SignedUpdate:
    """What a publisher's own code could sign if it skipped FeedWriter's check."""
    return writer._write(lambda doc: doc["releases"].__setitem__(key, value))


def test_a_release_is_bound_once_by_its_writer_and_by_every_replica() -> None:
    author, replica = Registry(), Registry()
    writer = FeedWriter(Keypair.generate(), author)
    first = release("echo", "1.0.0")
    for update in (writer.put_listing(listing("echo")), writer.put_release(first)):
        replica.apply(SignedUpdate.decode(update.encode()))
    other = validate_release({**first.to_wire(), "cid": "b3-" + "b" * 20})
    with pytest.raises(ReleaseExists) as refused:
        writer.put_release(other)
    assert not refused.value.same and first.cid in str(refused.value)
    with pytest.raises(ReleaseExists) as again:
        writer.put_release(first)
    assert again.value.same  # the same binding: nothing to write
    rebound = _rebind(writer, first.key, canonical_cbor(other.to_wire()))
    with pytest.raises(Equivocation, match="rebinds release"):
        replica.apply(SignedUpdate.decode(rebound.encode()))
    assert replica.feeds[writer.feed.address].releases()[first.key].cid == first.cid
    fresh, holder = FeedWriter(Keypair.generate(), Registry()), Registry()
    for update in (fresh.put_listing(listing("echo")), fresh.put_release(first)):
        holder.apply(SignedUpdate.decode(update.encode()))

    def unbind_and_list(doc: Doc) -> None:  # a deletion alone does not even move the clock
        doc["releases"].pop(first.key)
        doc["listings"]["other"] = canonical_cbor(listing("other").to_wire())

    unbound = fresh._write(unbind_and_list)
    with pytest.raises(Equivocation, match="unbinds release"):
        holder.apply(SignedUpdate.decode(unbound.encode()))
    assert holder.feeds[fresh.feed.address].releases()[first.key].cid == first.cid


def test_text_fields_refuse_control_characters_in_writers_and_replicas() -> None:
    for field, text in (("title", "red \x1b[31mtext"), ("summary", "two\nlines"),
                        ("title", "right\u202eto left"), ("description", "bell\x07")):  # fmt: skip
        with pytest.raises(SchemaError, match=field):
            listing("echo", **{field: text})
    assert listing("echo", description="two\nparagraphs\tand a tab").description
    writer = FeedWriter(Keypair.generate(), Registry())
    forged = {**listing("echo").to_wire(), "title": "\x1b]0;owned\x07"}
    signed = writer._write(lambda doc: doc["listings"].__setitem__("echo", canonical_cbor(forged)))
    with pytest.raises(UpdateRejected, match="control character"):
        Registry().apply(SignedUpdate.decode(signed.encode()))


MODEL = {
    "kind": "model",
    "price": 0,
    "model": {
        "family": "llama",
        "parameters": 1_200_000,
        "quantisation": "F16",
        "context_length": 4096,
        "input_price": 100,
        "output_price": 300,
    },
}


def test_a_model_listing_and_its_release_with_no_build_reach_replicas() -> None:
    from mercato.crdt._index import describe

    author, replica = Registry(), Registry()
    writer = FeedWriter(Keypair.generate(), author)
    tiny = listing("tiny-chat", **MODEL)
    bare = validate_release({"name": "tiny-chat", "version": "1.0.0"})
    for update in (writer.put_listing(tiny), writer.put_release(bare)):
        replica.apply(SignedUpdate.decode(update.encode()))
    feed = replica.feeds[writer.feed.address]
    assert feed.listing("tiny-chat") == tiny and feed.releases()["tiny-chat@1.0.0"] == bare
    shown = describe(feed, "tiny-chat")
    assert shown is not None
    assert shown["kind"] == "model" and shown["price"] == 0
    assert shown["model"] == {**MODEL["model"], "weights": ""}  # type: ignore[dict-item]
    assert shown["releases"] == [
        {"name": "tiny-chat", "version": "1.0.0", "cid": "", "size": 0, "dependencies": {}}
    ]
    with pytest.raises(ReleaseExists, match="bound to no build") as again:
        writer.put_release(validate_release({**bare.to_wire(), "cid": "b3-" + "a" * 20, "size": 5}))
    assert not again.value.same


def test_an_agents_release_must_name_its_build() -> None:
    writer = FeedWriter(Keypair.generate(), Registry())
    writer.put_listing(listing("echo"))
    with pytest.raises(SchemaError, match="an agent's release names its build") as refused:
        writer.put_release(validate_release({"name": "echo", "version": "1.0.0"}))
    assert refused.value.field == "cid"
    assert writer.feed.releases() == {}
    writer.put_release(release("echo", "1.0.0"))  # with its build: as ever
    # A model's release may name a build too.
    writer.put_listing(listing("tiny-chat", **MODEL))
    writer.put_release(release("tiny-chat", "1.0.0"))
    assert set(writer.feed.releases()) == {"echo@1.0.0", "tiny-chat@1.0.0"}


def test_a_rejected_update_leaves_the_feed_exactly_as_it_was_however_long() -> None:
    from mercato.crdt._feed import HISTORY_FOLD

    owner = Keypair.generate()
    writer, replica = FeedWriter(owner, Registry()), Registry()
    for i in range(HISTORY_FOLD + 5):  # past the point where the feed folds its history
        replica.apply(writer.put_listing(listing(f"l{i}")))
    release_update = writer.put_release(release("l0", "1.0.0"))
    replica.apply(release_update)
    feed = replica.feeds[owner.address]
    held = feed.state(), feed.content_hash(), feed.content(), feed.update_since()
    base = writer.feed.update_since()
    entry = canonical_cbor(listing("fresh").to_wire())
    rebound = canonical_cbor({**release("l0", "1.0.0").to_wire(), "cid": "b3-" + "b" * 20})
    bad = [
        (lambda d: d["listings"].__setitem__("fresh", b"\x00"), "must be a table"),
        (lambda d: d["listings"].__setitem__("fresh", b"\xa1\x61a"), "CBOR"),
        (lambda d: d["listings"].__setitem__("other", entry), "stored under"),
        (lambda d: d["releases"].__setitem__("l0@1.0.0", rebound), "releases never change"),
        (lambda d: d.__setitem__("junk", Map({"k": 1})), "outside"),
    ]
    for write, why in bad:
        with pytest.raises(UpdateRejected, match=why):
            replica.apply(_signed_raw(owner, write, base))
        feed = replica.feeds[owner.address]
        assert (feed.state(), feed.content_hash(), feed.content(), feed.update_since()) == held
        assert set(feed.doc.keys()) == {"listings", "releases"}
    replica.apply(writer.put_listing(listing("after")))
    assert replica.feeds[owner.address].content_hash() == writer.feed.content_hash()
    assert "after" in replica.feeds[owner.address].listing_names()


def test_a_signed_updates_encodings_are_its_canonical_cbor() -> None:
    from mercato.crdt._feed import _cbor_bytes
    from mercato.p2p import signing_payload, verify_signature

    owner = Keypair.generate()
    writer = FeedWriter(owner, Registry())
    signed = writer.put_listing(listing("echo", description="x" * 300))
    whole = canonical_cbor({**signed.body(), "sig": signed.sig})
    assert signed.encode() == whole
    assert signed._body_cbor == canonical_cbor(signed.body())
    assert SignedUpdate.decode(whole)._body_cbor == canonical_cbor(signed.body())
    assert signed.verified() and SignedUpdate.decode(whole).verified()
    assert verify_signature(signed.publisher, SIGN_KIND, signed.body(), signed.sig)
    assert signing_payload(SIGN_KIND, signed.body()).endswith(signed._body_cbor)
    for n in (0, 1, 23, 24, 255, 256, 65535, 65536, 70000):
        assert _cbor_bytes(bytes(n)) == canonical_cbor(bytes(n)), n
    wrong = [
        SignedUpdate(signed.publisher, signed.deps, signed.state, signed.update, signed.sig[:63]),
        SignedUpdate(signed.publisher[:31], signed.deps, signed.state, signed.update, signed.sig),
        SignedUpdate(
            signed.publisher, signed.deps, signed.state, signed.update + b"\0", signed.sig
        ),
    ]
    assert not any(u.verified() for u in wrong)


def test_entries_decode_exactly_as_decode_canonical_says() -> None:
    from mercato.crdt._feed import _decode_entry
    from mercato.p2p import FrameError, decode_canonical

    model = validate_listing(
        {
            "name": "m",
            "kind": "model",
            "title": "M",
            "summary": "A model.",
            "royalty_bps": 0,
            "model": {
                "family": "llama",
                "parameters": 10**9,
                "quantisation": "F16",
                "context_length": 4096,
                "input_price": 1,
                "output_price": 2,
            },
        }
    )
    good = [
        canonical_cbor(listing("echo").to_wire()),
        canonical_cbor(model.to_wire()),
        canonical_cbor(release("echo", "1.0.0").to_wire()),
        canonical_cbor({"a": 1.5, "b": [2**64 - 1, -(2**64), None, True, b"x"]}),
        canonical_cbor({"n": 2**70}),  # a bignum: a tag, which decode_canonical refuses
        canonical_cbor({"b": 1, "aa": 2, "é": 3, "z" * 30: {"y": [[[]]]}}),
    ]
    bad = [
        b"\xa2\x61b\x01\x61a\x02",  # keys out of order
        b"\xa1\x61a\x18\x01",  # an int not in its shortest form
        b"\xa1\x61a\xfb\x3f\xf8\x00\x00\x00\x00\x00\x00",  # 1.5 as a double
        b"\xbf\x61a\x01\xff",  # an indefinite map
        b"\xa2\x61a\x01\x61a\x02",  # a duplicate key
        b"\xa1\x61a\xc1\x01",  # a tag
        b"\xa1\x01\x02",  # a key that is not text
        b"\xa1\x61a\x01\x00",  # trailing bytes
        b"\x81" * 40 + b"\x00",  # too deep
        b"\xa1\x61a",  # truncated
        b"",
    ]
    for data in good + bad:
        try:
            expected = decode_canonical(data)
        except FrameError as exc:
            with pytest.raises(FrameError) as caught:
                _decode_entry(data)
            assert str(caught.value) == str(exc), data
        else:
            assert _decode_entry(data) == expected, data
