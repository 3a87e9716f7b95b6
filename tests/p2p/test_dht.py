"""Signed DHT records: only the key's owner can write, nobody can alter or replay stale ones."""

import time

import pytest

from mercato.p2p import DhtError, Keypair, make_record
from mercato.p2p._dht import DhtRecord, parse_record


def test_a_signed_record_parses_back() -> None:
    owner = Keypair.generate()
    record = make_record(owner, "card", b"data", ttl_s=60)
    assert record.key == f"/mercato/{owner.address}/card"
    assert parse_record(record.key, record.encode()) == record


def test_forged_altered_misplaced_or_expired_records_are_refused() -> None:
    owner, thief = Keypair.generate(), Keypair.generate()
    record = make_record(owner, "card", b"data", ttl_s=60)
    altered = DhtRecord(**{**record.__dict__, "data": b"other"})
    with pytest.raises(DhtError, match="signature"):
        parse_record(record.key, altered.encode())
    stolen = make_record(thief, "card", b"data", ttl_s=60)
    with pytest.raises(DhtError, match="another key"):
        parse_record(record.key, stolen.encode())  # thief's record under owner's key
    with pytest.raises(DhtError, match="expired"):
        parse_record(record.key, record.encode(), now=time.time() + 120)
    with pytest.raises(DhtError, match="canonical"):
        parse_record(record.key, b"\xff\x00")
    with pytest.raises(DhtError):
        make_record(owner, "Bad Name", b"", ttl_s=60)
    with pytest.raises(DhtError, match="ttl"):
        make_record(owner, "card", b"", ttl_s=10**9)


async def test_put_get_and_providers_across_peers(open_overlays) -> None:
    owner = Keypair.generate()
    async with open_overlays(5) as nodes:
        record = make_record(owner, "card", b"v1", ttl_s=60, seq=1)
        await nodes[1].dht.put(record)
        newer = make_record(owner, "card", b"v2", ttl_s=60, seq=2)
        await nodes[2].dht.put(newer)
        got = await nodes[4].dht.get(owner.address, "card")
        assert got is not None and got.data == b"v2"
        assert await nodes[3].dht.get(Keypair.generate().address, "card") is None
        await nodes[2].dht.provide("build:cid-1")
        providers = await nodes[4].dht.find_providers("build:cid-1")
        assert [p.peer_id for p in providers] == [nodes[2].peer_id]
