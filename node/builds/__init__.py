"""builds: agent builds, addressed by content, moved between peers, kept on the
peers responsible for them.

`BuildStore` keeps builds in the node's SQLite file and blobs dir (manifests,
chunks verified on arrival, a quota, pins). ``_transfer.py`` defines the
messages of ``/mercato/build/1.0.0``. `BuildService` serves builds, fetches
them from several providers at once, and keeps each released build on the R
peers closest to it, repairing when one leaves; `BuildService.wait_for_copies`
is what a release waits on.

Imports node's core modules (config, store, errors) and mercato.p2p; never the
registry, money, tasks or control subpackages.
"""

from ._service import BuildService as BuildService
from ._service import FetchState as FetchState
from ._service import Spread as Spread
from ._service import responsible as responsible
from ._store import SCHEMA as SCHEMA
from ._store import BadManifest as BadManifest
from ._store import BuildError as BuildError
from ._store import BuildInfo as BuildInfo
from ._store import BuildStore as BuildStore
from ._store import QuotaExceeded as QuotaExceeded
from ._store import UnknownBuild as UnknownBuild
from ._store import check_cid as check_cid
from ._store import manifest_of as manifest_of

__all__ = [
    "SCHEMA",
    "BadManifest",
    "BuildError",
    "BuildInfo",
    "BuildService",
    "BuildStore",
    "FetchState",
    "QuotaExceeded",
    "Spread",
    "UnknownBuild",
    "check_cid",
    "manifest_of",
    "responsible",
]
