"""Errors of the daemon and its local state::

MercatoError                    (mercato)
└── NodeError
    ├── FileUnreadable          a file to read is unreadable, too large or malformed
    ├── ConfigError             mercato.toml or a MERCATO_* variable is wrong
    ├── DataDirError            the data dir is missing, unreadable or of an unknown format
    │   └── DataDirLocked       another daemon holds the data dir
    ├── KeyStoreError           a key is missing, exists already, or its name is invalid
    ├── StoreError              the SQLite store cannot be opened or migrated
    └── ControlError            the control API refused or could not be reached
        └── DaemonNotRunning    no daemon answers for this data dir
"""

from __future__ import annotations

from mercato import MercatoError


class NodeError(MercatoError):
    """An error of the daemon or its local state."""


class NotServed(NodeError):
    """This node does not run that service (a relay runs no tasks, builds or wallet)."""


class FileUnreadable(NodeError):
    """A file mercato reads (a manifest, say) cannot be read, is too large, is not
    UTF-8 or is malformed; the message names it."""


class ConfigError(NodeError):
    """The configuration is invalid; the message names the key and where it came from."""


class DataDirError(NodeError):
    """The data dir cannot be used as it is."""


class DataDirLocked(DataDirError):
    """Another daemon is using this data dir."""


class KeyStoreError(NodeError):
    """A key operation failed."""


class KeyExists(KeyStoreError):
    """A key of that name exists already; it is never overwritten."""


class KeyNotFound(KeyStoreError):
    """No key of that name."""


class StoreError(NodeError):
    """The SQLite store cannot be opened, migrated or written."""


class StoreFull(StoreError):
    """The disk that holds the data dir is full: nothing was written."""


class ControlError(NodeError):
    """The control API answered with an error or could not be reached.

    ``status`` is the HTTP status (0 when no answer came) and ``code`` the
    API's machine-readable error code.
    """

    def __init__(self, message: str, *, status: int = 0, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DaemonNotRunning(ControlError):
    """No daemon answers for this data dir."""
