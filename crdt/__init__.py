"""crdt: the marketplace registry.

Owns signed per-publisher pycrdt feeds (one document per publisher, written only
through updates its account key signed), the listing and release schema, and
semantic versions and ranges. Gossip, anti-entropy, the query index and the
query protocol build on these.

May import p2p; must not import node, runtime or settlement.
"""

from ._errors import RegistryError as RegistryError
from ._errors import SchemaError as SchemaError
from ._errors import UpdateRejected as UpdateRejected
from ._errors import VersionError as VersionError
from ._feed import Feed as Feed
from ._feed import FeedWriter as FeedWriter
from ._feed import Registry as Registry
from ._feed import SignedUpdate as SignedUpdate
from ._index import SCHEMA as SCHEMA
from ._index import Query as Query
from ._index import QueryError as QueryError
from ._index import RegistryStore as RegistryStore
from ._index import SearchPage as SearchPage
from ._schema import Listing as Listing
from ._schema import Release as Release
from ._schema import validate_listing as validate_listing
from ._schema import validate_release as validate_release
from ._semver import Version as Version
from ._semver import VersionRange as VersionRange
from ._sync import MAX_RESPONSE_BYTES as MAX_SYNC_RESPONSE_BYTES
from ._sync import SYNC as SYNC
from ._sync import SyncRequest as SyncRequest
from ._sync import SyncResponse as SyncResponse
from ._sync import digest as sync_digest

__all__ = [
    "Feed",
    "FeedWriter",
    "Listing",
    "Query",
    "QueryError",
    "Registry",
    "RegistryError",
    "Release",
    "RegistryStore",
    "SCHEMA",
    "SearchPage",
    "MAX_SYNC_RESPONSE_BYTES",
    "SYNC",
    "SyncRequest",
    "SyncResponse",
    "SignedUpdate",
    "SchemaError",
    "UpdateRejected",
    "Version",
    "VersionError",
    "VersionRange",
    "validate_listing",
    "sync_digest",
    "validate_release",
]
