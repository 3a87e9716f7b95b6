"""crdt: the marketplace registry (signed per-publisher pycrdt feeds, gossip,
anti-entropy, validation, the query index). Not built yet.

May import p2p; must not import node, runtime or settlement.
"""

__all__: list[str] = []
