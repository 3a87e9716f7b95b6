"""The node's SQLite schema: every part's tables, in the order they were added.

This is part of the composition root: the store applies whatever migrations
it is given and knows no table itself; each part owns its table definitions.
Append only: never edit a released migration, add a new one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mercato.crdt import JOURNAL_KEYED as REGISTRY_JOURNAL_KEYED
from mercato.crdt import MIGRATIONS as REGISTRY_MIGRATIONS

from ._events import SCHEMA as EVENTS_SCHEMA
from ._peers import SCHEMA as PEERS_SCHEMA
from ._store import Database, Store, open_store
from .builds import SCHEMA as BUILDS_SCHEMA
from .commerce import SCHEMA as COMMERCE_SCHEMA
from .gateway import RESULTS_SCHEMA as GATEWAY_RESULTS_SCHEMA
from .gateway import SCHEMA as GATEWAY_SCHEMA
from .tasks import SCHEMA as TASKS_SCHEMA
from .tasks import SPENDING_SCHEMA
from .tasks import TOKENS_SCHEMA as TASK_TOKENS_SCHEMA

MIGRATIONS: tuple[str, ...] = (
    EVENTS_SCHEMA,  # 1: the hash-chained event log
    PEERS_SCHEMA,  # 2: the p2p address book
    # 3: the registry's journal of signed updates and its query index;
    # 4: journal clocks for anti-entropy, and the index's completeness mark.
    *REGISTRY_MIGRATIONS,
    BUILDS_SCHEMA,  # 5: stored builds and the chunks of each verified so far
    TASKS_SCHEMA,  # 6: the task log and the reputation of providers
    SPENDING_SCHEMA,  # 7: what tasks paid, and runs' results by idempotency key
    COMMERCE_SCHEMA,  # 8: licences bought and sold
    GATEWAY_SCHEMA,  # 9: x402 payments taken, and royalties forwarded to creators
    GATEWAY_RESULTS_SCHEMA,  # 10: answers of x402 calls whose settlement was pending
    TASK_TOKENS_SCHEMA,  # 11: the tokens in and out of each model call in the task log
    REGISTRY_JOURNAL_KEYED,  # 12: the registry journal keyed by feed and clock, one index
)
SCHEMA_VERSION = len(MIGRATIONS)


def node_database(path: Path) -> Database:
    """The node's database at ``path``, created and migrated as needed (blocking).

    StoreError if the file is not a database or is of a newer schema.
    """
    return Database(path, MIGRATIONS)


@asynccontextmanager
async def open_node_store(path: Path) -> AsyncIterator[Store]:
    """`open_store` with the node's schema."""
    async with open_store(path, MIGRATIONS) as store:
        yield store
