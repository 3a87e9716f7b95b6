import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.peer.id import ID
from solders.keypair import Keypair as SolanaKeypair

from mercato.p2p import (
    IdentityError,
    Keypair,
    b58decode,
    b58encode,
    signing_payload,
    verify_signature,
)


@given(st.binary(max_size=80))
def test_base58_round_trips(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


def test_base58_rejects_characters_outside_the_alphabet() -> None:
    with pytest.raises(ValueError):
        b58decode("0OIl")


def test_address_is_the_solana_address_of_the_same_keypair_file() -> None:
    pair = Keypair.generate()
    solana = SolanaKeypair.from_json(pair.to_json())
    assert str(solana.pubkey()) == pair.address


def test_peer_id_matches_py_libp2p() -> None:
    pair = Keypair.generate()
    expected = ID.from_pubkey(Ed25519PublicKey.from_bytes(pair.public_key)).to_base58()
    assert pair.peer_id == expected
    assert pair.peer_id.startswith("12D3KooW")


def test_keypair_file_round_trips_and_rejects_a_mismatched_public_key() -> None:
    pair = Keypair.generate()
    assert Keypair.from_json(pair.to_json()) == pair
    values = json.loads(pair.to_json())
    values[40] ^= 1
    with pytest.raises(IdentityError, match="does not match"):
        Keypair.from_json(json.dumps(values))
    with pytest.raises(IdentityError, match="64 bytes"):
        Keypair.from_json("[1, 2, 3]")
    with pytest.raises(IdentityError, match="JSON array"):
        Keypair.from_json("not json")


def test_repr_does_not_show_the_secret() -> None:
    pair = Keypair.generate()
    assert pair.seed.hex() not in repr(pair)
    assert str(list(pair.seed)) not in repr(pair)


def test_signatures_are_domain_separated_and_bound_to_the_body() -> None:
    pair = Keypair.generate()
    body = {"name": "echo", "price": 5}
    sig = pair.sign("listing", body)
    assert verify_signature(pair.public_key, "listing", body, sig)
    assert not verify_signature(pair.public_key, "receipt", body, sig)
    assert not verify_signature(pair.public_key, "listing", {**body, "price": 6}, sig)
    assert not verify_signature(Keypair.generate().public_key, "listing", body, sig)
    assert not verify_signature(b"short", "listing", body, sig)


def test_signing_payload_is_canonical_whatever_the_key_order() -> None:
    assert signing_payload("x", {"a": 1, "b": 2}) == signing_payload("x", {"b": 2, "a": 1})
    assert signing_payload("x", {}).startswith(b"mercato/x/v1\0")
    with pytest.raises(ValueError):
        signing_payload("Bad Kind", {})
