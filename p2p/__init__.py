"""p2p: the base every other part stands on.

Owns identities (ed25519 keys, peer ids, Solana-style addresses), the canonical
codec and signing payloads, and the root of the error tree. Later it owns the
libp2p host, DHT, GossipSub and the request/response protocols.

It knows nothing about the marketplace and imports no other mercato package.
"""

from ._codec import canonical_cbor as canonical_cbor
from ._codec import signing_payload as signing_payload
from ._errors import IdentityError as IdentityError
from ._errors import MercatoError as MercatoError
from ._errors import P2PError as P2PError
from ._identity import Keypair as Keypair
from ._identity import b58decode as b58decode
from ._identity import b58encode as b58encode
from ._identity import peer_id_from_public_key as peer_id_from_public_key
from ._identity import verify_signature as verify_signature

__all__ = [
    "IdentityError",
    "Keypair",
    "MercatoError",
    "P2PError",
    "b58decode",
    "b58encode",
    "canonical_cbor",
    "peer_id_from_public_key",
    "signing_payload",
    "verify_signature",
]
