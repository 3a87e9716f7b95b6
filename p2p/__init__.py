"""p2p: the base every other part stands on.

Owns identities (ed25519 keys, peer ids, Solana-style addresses), the canonical
codec and signing payloads, and the libp2p overlay:
the host (TCP + Noise + Yamux, identify, ping), the framework for request/response
protocols, GossipSub topics with validators, the Kademlia DHT with signed records
and provider records, and discovery (bootstrap, mDNS, a persisted address book).

It knows nothing about the marketplace and imports no other mercato package.
"""

from ._codec import canonical_cbor as canonical_cbor
from ._codec import signing_payload as signing_payload
from ._dht import Dht as Dht
from ._dht import DhtConfig as DhtConfig
from ._dht import DhtError as DhtError
from ._dht import DhtRecord as DhtRecord
from ._dht import Provider as Provider
from ._dht import make_record as make_record
from ._discovery import AddressBook as AddressBook
from ._discovery import DiscoveryConfig as DiscoveryConfig
from ._errors import IdentityError as IdentityError
from ._errors import P2PError as P2PError
from ._exchange import Exchange as Exchange
from ._exchange import ExchangeProtocol as ExchangeProtocol
from ._gossip import GossipConfig as GossipConfig
from ._gossip import GossipError as GossipError
from ._gossip import GossipMessage as GossipMessage
from ._gossip import Verdict as Verdict
from ._host import BadAddress as BadAddress
from ._host import DialError as DialError
from ._host import HostConfig as HostConfig
from ._host import P2PHost as P2PHost
from ._host import PeerBanned as PeerBanned
from ._identity import Keypair as Keypair
from ._identity import b58decode as b58decode
from ._identity import b58encode as b58encode
from ._identity import peer_id_from_public_key as peer_id_from_public_key
from ._identity import public_key_of_peer as public_key_of_peer
from ._identity import verify_signature as verify_signature
from ._info import InfoResponse as InfoResponse
from ._messages import Message as Message
from ._messages import MessageError as MessageError
from ._overlay import Overlay as Overlay
from ._overlay import OverlayConfig as OverlayConfig
from ._overlay import open_overlay as open_overlay
from ._reachability import ReachabilityConfig as ReachabilityConfig
from ._relay import RelayConfig as RelayConfig
from ._requests import BadResponse as BadResponse
from ._requests import Refused as Refused
from ._requests import RemoteError as RemoteError
from ._requests import RequestFailed as RequestFailed
from ._requests import RequestProtocol as RequestProtocol
from ._requests import Requests as Requests
from ._requests import RequestTimeout as RequestTimeout
from ._trio_util import TokenBucket as TokenBucket
from ._wire import FrameError as FrameError
from ._wire import FrameTooLarge as FrameTooLarge
from ._wire import decode_body as decode_canonical

__all__ = [
    "AddressBook",
    "BadResponse",
    "DhtConfig",
    "Dht",
    "DhtError",
    "DhtRecord",
    "BadAddress",
    "DialError",
    "DiscoveryConfig",
    "Exchange",
    "ExchangeProtocol",
    "FrameError",
    "FrameTooLarge",
    "GossipConfig",
    "RelayConfig",
    "ReachabilityConfig",
    "GossipError",
    "GossipMessage",
    "HostConfig",
    "IdentityError",
    "InfoResponse",
    "Keypair",
    "Message",
    "MessageError",
    "Overlay",
    "OverlayConfig",
    "P2PError",
    "P2PHost",
    "PeerBanned",
    "Provider",
    "Refused",
    "RemoteError",
    "RequestFailed",
    "RequestProtocol",
    "RequestTimeout",
    "Requests",
    "Verdict",
    "b58decode",
    "b58encode",
    "canonical_cbor",
    "decode_canonical",
    "TokenBucket",
    "make_record",
    "open_overlay",
    "peer_id_from_public_key",
    "public_key_of_peer",
    "signing_payload",
    "verify_signature",
]
