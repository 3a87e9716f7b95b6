"""node: the mercato daemon.

Owns the composition of every service (`Node`), the data dir and its format,
configuration, keys, the SQLite store and its schema, the event log, metrics,
logging and HTTP serving. Its domains are subpackages, each stating its job
and what it may import: registry/ (the registry run in the daemon), builds/,
money/ (settlement run in the daemon), tasks/, and control/ (the `NodeAPI`
facade, the control API on FastAPI, `ControlClient`). The CLI imports only what
is exported here.

May import every other mercato package except cli.
"""

from mercato import MercatoError as MercatoError
from mercato.crdt import Version as Version
from mercato.crdt import VersionError as VersionError
from mercato.crdt import VersionRange as VersionRange
from mercato.runtime import Limits as Limits
from mercato.runtime import Outcome as Outcome
from mercato.runtime import RunResult as RunResult

from ._config import Config as Config
from ._config import ServedModel as ServedModel
from ._config import load_config as load_config
from ._errors import ConfigError as ConfigError
from ._errors import ControlError as ControlError
from ._errors import DaemonNotRunning as DaemonNotRunning
from ._errors import DataDirError as DataDirError
from ._errors import DataDirLocked as DataDirLocked
from ._errors import FileUnreadable as FileUnreadable
from ._errors import KeyExists as KeyExists
from ._errors import KeyNotFound as KeyNotFound
from ._errors import KeyStoreError as KeyStoreError
from ._errors import NodeError as NodeError
from ._errors import NotServed as NotServed
from ._errors import StoreError as StoreError
from ._errors import StoreFull as StoreFull
from ._events import Event as Event
from ._events import VerifyReport as VerifyReport
from ._exec import run_build as run_build
from ._files import read_toml as read_toml
from ._init import InitResult as InitResult
from ._init import init_data_dir as init_data_dir
from ._keys import KeyInfo as KeyInfo
from ._keys import KeyStore as KeyStore
from ._keys import check_account_name as check_account_name
from ._localnet import DEFAULT_PORT as LOCALNET_PORT
from ._localnet import serve_localnet as serve_localnet
from ._lock import DataDirLock as DataDirLock
from ._lock import lock_holder as lock_holder
from ._logs import configure_logging as configure_logging
from ._node import Node as Node
from ._paths import FORMAT_VERSION as FORMAT_VERSION
from ._paths import DataDir as DataDir
from ._paths import default_data_dir as default_data_dir
from ._schema import MIGRATIONS as MIGRATIONS
from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._schema import node_database as node_database
from ._schema import open_node_store as open_node_store
from ._store import Database as Database
from ._store import Store as Store
from ._store import open_store as open_store
from ._version import __version__ as __version__
from .control import Control as Control
from .control import ControlClient as ControlClient
from .control import LocalControl as LocalControl
from .control import NodeAPI as NodeAPI
from .control import open_control as open_control

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "NodeAPI",
    "node_database",
    "open_node_store",
    "FileUnreadable",
    "read_toml",
    "Limits",
    "check_account_name",
    "Version",
    "VersionError",
    "VersionRange",
    "Outcome",
    "RunResult",
    "run_build",
    "serve_localnet",
    "FORMAT_VERSION",
    "Config",
    "ConfigError",
    "Control",
    "ControlClient",
    "ControlError",
    "DaemonNotRunning",
    "DataDir",
    "DataDirError",
    "DataDirLock",
    "DataDirLocked",
    "Database",
    "Event",
    "InitResult",
    "KeyExists",
    "KeyInfo",
    "KeyNotFound",
    "KeyStore",
    "ServedModel",
    "KeyStoreError",
    "LOCALNET_PORT",
    "LocalControl",
    "MercatoError",
    "Node",
    "NodeError",
    "NotServed",
    "Store",
    "StoreError",
    "StoreFull",
    "VerifyReport",
    "__version__",
    "configure_logging",
    "default_data_dir",
    "init_data_dir",
    "load_config",
    "lock_holder",
    "open_control",
    "open_store",
]
