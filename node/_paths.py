"""Every path inside a data dir, in one place, and the data dir's format version.

Layout (format version 1)::

    <data dir>/
      format-version      the integer layout version of this directory
      mercato.toml        configuration (optional; defaults apply)
      daemon.lock         held (flock) by the running daemon; holds its pid
      api.json            address of the running daemon's control API
      api.token           bearer token of the control API (0600)
      node.db             SQLite store (WAL)
      keys/node.key       the node's libp2p identity (0600)
      keys/accounts/*.key account keys (0600)
      blobs/              content-addressed builds (later)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import DataDirError

FORMAT_VERSION = 1
ENV_DATA_DIR = "MERCATO_DATA_DIR"


def default_data_dir() -> Path:
    """``$MERCATO_DATA_DIR`` if set, else the platform's user data dir for mercato."""
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs  # imported late: only needed when no dir is given

    return Path(platformdirs.user_data_dir("mercato", appauthor=False))


@dataclass(frozen=True)
class DataDir:
    """The paths of one data dir. Creating the object touches nothing on disk."""

    root: Path

    @property
    def format_file(self) -> Path:
        return self.root / "format-version"

    @property
    def config_file(self) -> Path:
        return self.root / "mercato.toml"

    @property
    def lock_file(self) -> Path:
        return self.root / "daemon.lock"

    @property
    def api_file(self) -> Path:
        return self.root / "api.json"

    @property
    def token_file(self) -> Path:
        return self.root / "api.token"

    @property
    def db_file(self) -> Path:
        return self.root / "node.db"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def node_key_file(self) -> Path:
        return self.keys_dir / "node.key"

    @property
    def accounts_dir(self) -> Path:
        return self.keys_dir / "accounts"

    @property
    def ledger_file(self) -> Path:
        """The embedded ledger's journal of accounts (see settlement/_ledger.py)."""
        return self.root / "ledger.db"

    @property
    def channels_file(self) -> Path:
        """The channel book: every payment channel and its latest state."""
        return self.root / "channels.db"

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def module_cache_dir(self) -> Path:
        """Compiled WebAssembly modules; safe to delete (they are compiled again)."""
        return self.root / "cache" / "modules"

    def is_initialized(self) -> bool:
        return self.format_file.exists()

    def read_format_version(self) -> int:
        """The data dir's format version; raises DataDirError if it cannot be used."""
        if not self.format_file.exists():
            raise DataDirError(
                f"{self.root} is not a mercato data dir (no format-version file); "
                f"run `mercato init --data-dir {self.root}` to create one"
            )
        try:
            text = self.format_file.read_bytes()[:64].decode("ascii").strip()
            version = int(text)
        except OSError as exc:
            raise DataDirError(f"cannot read {self.format_file}: {exc.strerror}") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            text = self.format_file.read_bytes()[:40].decode("ascii", "replace")
            raise DataDirError(
                f"{self.format_file} holds {text[:40]!r}, not a format version number"
            ) from exc
        return version

    def check_format(self) -> None:
        """Refuse a data dir whose format this version of mercato does not know."""
        version = self.read_format_version()
        if version != FORMAT_VERSION:
            raise DataDirError(
                f"data dir {self.root} has format version {version}, but this mercato "
                f"understands only version {FORMAT_VERSION}; "
                + (
                    "upgrade mercato to use it"
                    if version > FORMAT_VERSION
                    else "it is too old to open"
                )
            )
