"""registry: the marketplace registry (mercato.crdt) run in the daemon.

`RegistryService` gossips signed feed updates on ``mercato/registry/1`` (the
topic validator ingests them), keeps every peer in sync by anti-entropy,
answers remote queries, and publishes this node's own listings and releases,
compacting its feeds as it goes.

Imports node's core modules, mercato.crdt and mercato.p2p; never builds, money,
tasks or control.
"""

from ._service import TOPIC as TOPIC
from ._service import RegistryService as RegistryService

__all__ = ["TOPIC", "RegistryService"]
