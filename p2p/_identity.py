"""Ed25519 identities: node keys (libp2p peer ids) and account keys (Solana addresses).

A key file holds the key pair as a JSON array of 64 byte values (the 32-byte
seed followed by the 32-byte public key): the format of Solana's own keypair
files, so an account key can be used by Solana tools as it is.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from ._codec import signing_payload
from ._errors import IdentityError

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
MAX_B58_LEN = 128  # addresses are 32-44 characters, peer ids about 52
# protobuf PublicKey{Type: Ed25519, Data: <32 bytes>} wrapped in an identity multihash.
_PEER_ID_PREFIX = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])


@functools.lru_cache(maxsize=65536)  # the same keys recur: publishers, peers
def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58, as used by Solana addresses and libp2p peer ids."""
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "1" * pad + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    """Inverse of `b58encode`; ValueError on a character outside the alphabet, or on
    text longer than any key or id (decoding is quadratic in the length)."""
    if len(text) > MAX_B58_LEN:
        raise ValueError(f"base58 text of {len(text)} characters is longer than any id")
    n = 0
    for ch in text:
        if ch not in _B58_INDEX:
            raise ValueError(f"invalid base58 character {ch!r}")
        n = n * 58 + _B58_INDEX[ch]
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    pad = len(text) - len(text.lstrip("1"))
    return b"\0" * pad + body


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p peer id (``12D3KooW...``) of an ed25519 public key."""
    return b58encode(_PEER_ID_PREFIX + public_key)


def public_key_of_peer(peer_id: str) -> bytes:
    """The ed25519 public key inside a peer id (``12D3KooW...``); ValueError if it
    is not an ed25519 peer id."""
    raw = b58decode(peer_id)
    if len(raw) != len(_PEER_ID_PREFIX) + 32 or not raw.startswith(_PEER_ID_PREFIX):
        raise ValueError(f"{peer_id[:60]!r} is not an ed25519 peer id")
    return raw[len(_PEER_ID_PREFIX) :]


def verify_signature(public_key: bytes, kind: str, body: Any, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s signature of ``body`` as ``kind``."""
    try:
        nacl.signing.VerifyKey(public_key).verify(signing_payload(kind, body), signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


@dataclass(frozen=True, repr=False)
class Keypair:
    """An ed25519 key pair. The repr never shows the secret."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise IdentityError("an ed25519 seed is 32 bytes")

    @classmethod
    def generate(cls) -> Keypair:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def public_key(self) -> bytes:
        return bytes(nacl.signing.SigningKey(self.seed).verify_key)

    @property
    def address(self) -> str:
        """The public key in base58: a Solana address and a registry publisher id."""
        return b58encode(self.public_key)

    @property
    def peer_id(self) -> str:
        """The libp2p peer id this key would have as a node key."""
        return peer_id_from_public_key(self.public_key)

    def sign(self, kind: str, body: Any) -> bytes:
        """Sign ``body`` as an object of ``kind`` (domain-separated canonical CBOR)."""
        return nacl.signing.SigningKey(self.seed).sign(signing_payload(kind, body)).signature

    def to_json(self) -> str:
        return json.dumps(list(self.seed + self.public_key))

    @classmethod
    def from_json(cls, text: str) -> Keypair:
        """Parse a Solana-style keypair file; raises IdentityError if it is malformed."""
        try:
            values = json.loads(text)
            raw = bytes(values)
        except (ValueError, TypeError) as exc:
            raise IdentityError("not a keypair file: expected a JSON array of 64 bytes") from exc
        if len(raw) != 64:
            raise IdentityError(f"not a keypair file: expected 64 bytes, found {len(raw)}")
        pair = cls(raw[:32])
        if pair.public_key != raw[32:]:
            raise IdentityError("corrupt keypair file: the public key does not match the seed")
        return pair

    def __repr__(self) -> str:
        return f"Keypair(address={self.address!r})"
