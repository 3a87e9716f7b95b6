"""mercato: a peer-to-peer marketplace for AI agents and models.

This folder is the ``mercato`` package; each top-level folder installs as one of
its parts (``node/`` as ``mercato.node``, and so on, mapped in pyproject.toml):

    mercato.cli         the ``mercato`` command
    mercato.node        the daemon: composes every service; the control API
    mercato.crdt        the marketplace registry
    mercato.runtime     WebAssembly execution in sandboxed worker processes
    mercato.settlement  payment channels on Solana
    mercato.p2p         the libp2p overlay, identities and wire codecs
    mercato.bootstrap   a relay host's deployment files

Dependencies point one way: cli -> node -> {crdt, runtime, settlement} -> p2p
(ARCHITECTURE.md). This module holds only the root of the error tree, so that
every part, down to a sandbox worker process, can import it without loading
anything heavy: it imports nothing.
"""

from __future__ import annotations

__all__ = ["MercatoError"]


class MercatoError(Exception):
    """Base class of every error mercato raises on purpose.

    Each part adds one subclass and raises only its descendants; an error from
    a dependency (libp2p, wasmtime, solana, SQLite) is translated where it
    enters and keeps its cause (``raise Mapped(...) from exc``). Messages say
    what went wrong and what to do about it. The whole tree::

        MercatoError
        ├── P2PError                    mercato.p2p
        │   ├── IdentityError           a key file is missing, malformed or unreadable
        │   ├── DialError               a peer could not be reached
        │   │   └── BadAddress          a multiaddr does not parse
        │   ├── PeerBanned              the peer is banned here
        │   ├── FrameError              a wire frame is malformed
        │   │   └── FrameTooLarge       ... or over its size limit
        │   ├── MessageError            a message does not match its schema
        │   ├── RequestFailed           a request/response exchange failed
        │   │   ├── RequestTimeout      no answer in time
        │   │   ├── BadResponse         the answer does not decode
        │   │   └── RemoteError         the peer answered with an error
        │   ├── Refused                 a handler refuses a request (sent as RemoteError)
        │   ├── GossipError             a topic could not be joined or published on
        │   └── DhtError                a DHT record or lookup failed
        ├── RegistryError               mercato.crdt
        │   ├── VersionError            a version or range does not parse
        │   ├── SchemaError             a listing field is wrong; names the field
        │   ├── UpdateRejected          a signed update is forged, oversized or invalid
        │   │   └── Equivocation        its publisher signed two histories
        │   ├── ReleaseExists           name@version is bound already, forever
        │   ├── QueryError              a search's filters make no sense
        │   ├── DependencyConflict      no releases satisfy every range
        │   └── ListingNotFound         not in this node's registry
        ├── SandboxError                mercato.runtime (no run happened)
        │   ├── InvalidModule           not a module the sandbox can run
        │   ├── InputTooLarge           the input is over the run's limit
        │   └── LimitsError             a limit is out of bounds
        ├── SettlementError             mercato.settlement
        │   ├── LedgerError             the ledger refused or cannot be read
        │   │   ├── LockupInForce       a refund before the lockup ends
        │   │   ├── BlockhashExpired    build the transaction again
        │   │   └── LedgerUnreachable   no answer or confirmation: it may still land
        │   ├── ChannelError            a channel state does not hold up
        │   │   └── PaymentShort        sound, but it does not cover the task
        │   ├── LicenceError            a licence token or purchase does not hold up
        │   └── PaymentInvalid          an x402 payment is not exactly what was required
        └── NodeError                   mercato.node
            ├── NotServed               this node does not run that service
            ├── FileUnreadable          a file is unreadable, too large or malformed
            ├── ConfigError             mercato.toml or a MERCATO_* variable is wrong
            ├── DataDirError            the data dir cannot be used
            │   └── DataDirLocked       another daemon holds it
            ├── KeyStoreError           a key operation failed
            │   ├── KeyExists           a key of that name exists
            │   └── KeyNotFound         no key of that name
            ├── StoreError              the SQLite store cannot be opened or migrated
            │   └── StoreFull           its disk is full: nothing was written
            ├── ControlError            the control API refused or could not be reached
            │   └── DaemonNotRunning    no daemon answers for the data dir
            ├── GatewayRefused          mercato.node.gateway: an x402 call refused
            ├── CommerceError           mercato.node.commerce
            │   ├── BadSignedObject     an offer, licence use or refund request is forged
            │   ├── LicenceRequired     the listing runs only under a licence
            │   ├── LicenceRefused      the licence shown does not hold up on the ledger
            │   ├── UnknownLicence      no licence of that mint here
            │   ├── NoSeller            the creator's node cannot be reached
            │   └── SaleRefused         the creator's node said no
            ├── ModelError              mercato.node.models
            │   ├── NoModel             no such model, or no live provider of it
            │   ├── BadModelRequest     the chat request is wrong (body, context, budget)
            │   ├── ModelUnavailable    every provider failed before streaming
            │   ├── EngineDown          a provider's engine is down or broke off
            │   └── EngineRefused       a provider's engine answered with an error
            ├── BuildError              mercato.node.builds
            │   ├── UnknownBuild        no such build here
            │   ├── BadManifest         a build manifest does not hold up
            │   └── QuotaExceeded       the build store is full
            └── TaskError               mercato.node.tasks
                ├── BadReceipt          a receipt or quote does not verify
                ├── UnknownAgent        no such agent, or no release in range
                ├── TaskRefused         the provider refused the task
                ├── NoProvider          no provider could run it
                ├── KeyReused           an idempotency key came with another request
                └── NoProof             a receipt cannot be proven on the ledger (yet)

    `tests/test_architecture.py` checks that this drawing names every error
    class the packages export.
    """
