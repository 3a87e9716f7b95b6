"""crdt: the marketplace registry.

Owns signed per-publisher pycrdt feeds (one document per publisher, written only
through updates its account key signed), the listing and release schema, and
semantic versions and ranges; the journal and query index on SQLite
(`RegistryStore`); dependency resolution; and the messages of the registry's
two protocols, anti-entropy (``/mercato/sync/3.0.0``) and remote queries
(``/mercato/query/1.0.0``).

May import p2p; must not import node, runtime or settlement.
"""

from ._errors import DependencyConflict as DependencyConflict
from ._errors import Equivocation as Equivocation
from ._errors import ListingNotFound as ListingNotFound
from ._errors import QueryError as QueryError
from ._errors import RegistryError as RegistryError
from ._errors import ReleaseExists as ReleaseExists
from ._errors import SchemaError as SchemaError
from ._errors import UpdateRejected as UpdateRejected
from ._errors import VersionError as VersionError
from ._feed import Feed as Feed
from ._feed import FeedWriter as FeedWriter
from ._feed import Registry as Registry
from ._feed import SignedUpdate as SignedUpdate
from ._feed import better as better_history
from ._index import COMPACTED as COMPACTED
from ._index import JOURNAL_KEYED as JOURNAL_KEYED
from ._index import MIGRATIONS as MIGRATIONS
from ._index import Fork as Fork
from ._index import Query as Query
from ._index import RegistryStore as RegistryStore
from ._index import SearchPage as SearchPage
from ._query import QUERY as QUERY
from ._query import FeedCopy as FeedCopy
from ._query import QueryRequest as QueryRequest
from ._query import QueryResponse as QueryResponse
from ._query import decode_result as decode_query_result
from ._query import encode_result as encode_query_result
from ._query import verified_listing as verified_listing
from ._resolve import Resolution as Resolution
from ._resolve import resolve as resolve
from ._schema import SUBCALL_LIMITS as SUBCALL_LIMITS
from ._schema import Listing as Listing
from ._schema import ModelSpec as ModelSpec
from ._schema import Plan as Plan
from ._schema import Release as Release
from ._schema import validate_listing as validate_listing
from ._schema import validate_release as validate_release
from ._semver import Version as Version
from ._semver import VersionRange as VersionRange
from ._sync import MAX_FORKS as MAX_SYNC_FORKS
from ._sync import MAX_RESPONSE_BYTES as MAX_SYNC_RESPONSE_BYTES
from ._sync import SYNC as SYNC
from ._sync import SyncRequest as SyncRequest
from ._sync import SyncResponse as SyncResponse
from ._sync import digest as sync_digest

__all__ = [
    "SUBCALL_LIMITS",
    "FeedCopy",
    "COMPACTED",
    "JOURNAL_KEYED",
    "DependencyConflict",
    "Equivocation",
    "ReleaseExists",
    "ListingNotFound",
    "Feed",
    "Fork",
    "better_history",
    "FeedWriter",
    "Listing",
    "ModelSpec",
    "Plan",
    "MAX_SYNC_FORKS",
    "MAX_SYNC_RESPONSE_BYTES",
    "MIGRATIONS",
    "QUERY",
    "Query",
    "QueryError",
    "QueryRequest",
    "QueryResponse",
    "Registry",
    "RegistryError",
    "RegistryStore",
    "Release",
    "Resolution",
    "SYNC",
    "SchemaError",
    "SearchPage",
    "SignedUpdate",
    "SyncRequest",
    "SyncResponse",
    "UpdateRejected",
    "Version",
    "VersionError",
    "VersionRange",
    "decode_query_result",
    "encode_query_result",
    "resolve",
    "sync_digest",
    "validate_listing",
    "validate_release",
    "verified_listing",
]
