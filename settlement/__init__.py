"""settlement: payment channels closed on Solana, royalties, ledger adapters and
the watcher that closes or refunds channels in time. Not built yet.

May import p2p; must not import node, crdt or runtime.
"""

__all__: list[str] = []
