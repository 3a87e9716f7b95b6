"""The key store: the node key and named account keys, each in its own 0600 file.

All methods do blocking file I/O; the daemon calls them from worker threads.
"""

from __future__ import annotations

import logging
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from mercato.p2p import IdentityError, Keypair

from ._errors import KeyExists, KeyNotFound, KeyStoreError
from ._files import create_exclusive
from ._paths import DataDir

log = logging.getLogger("mercato.keys")

NODE_KEY_NAME = "node"
DEFAULT_ACCOUNT = "default"
_ACCOUNT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


MAX_KEY_FILE_BYTES = 64 * 1024  # a key file is a few hundred bytes


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its secret."""

    name: str
    kind: str  # "node" or "account"
    public_key: str  # hex
    address: str  # base58: Solana address / publisher id
    peer_id: str | None  # only for the node key
    path: str

    def to_dict(self) -> dict[str, str | None]:
        return dict(self.__dict__)


def write_secret_file(path: Path, text: str) -> None:
    """Create ``path`` (mode 0600) with ``text``, durably; never overwrites a file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        create_exclusive(path, text.encode(), 0o600)
    except FileExistsError as exc:
        raise KeyExists(f"key file {path} already exists; refusing to overwrite it") from exc


def loose_permissions(path: Path) -> bool:
    """True if group or others may read or write ``path``."""
    return bool(stat.S_IMODE(path.stat().st_mode) & 0o077)


class KeyStore:
    """Reads and creates the key files of one data dir."""

    def __init__(self, datadir: DataDir) -> None:
        self._datadir = datadir

    def _load(self, path: Path) -> Keypair:
        if loose_permissions(path):
            log.warning(
                "key file %s is readable by other users (mode %o); run `chmod 600 %s`",
                path,
                stat.S_IMODE(path.stat().st_mode),
                path,
                extra={"path": str(path)},
            )
        try:
            return Keypair.from_json(path.read_bytes()[:MAX_KEY_FILE_BYTES].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise KeyStoreError(
                f"{path} is not a key file (not UTF-8 text): restore it from your backup"
            ) from exc
        except OSError as exc:
            raise KeyStoreError(f"cannot read {path}: {exc.strerror}") from exc
        except IdentityError as exc:
            raise KeyStoreError(f"{path}: {exc}; restore it from your backup") from exc

    def ensure_node_key(self) -> bool:
        """Create the node key if it does not exist. True if it was created."""
        if self._datadir.node_key_file.exists():
            return False
        write_secret_file(self._datadir.node_key_file, Keypair.generate().to_json())
        return True

    def node_key(self) -> Keypair:
        path = self._datadir.node_key_file
        if not path.exists():
            raise KeyNotFound(f"node key {path} is missing; run `mercato init` to create one")
        return self._load(path)

    def _account_path(self, name: str) -> Path:
        return self._datadir.accounts_dir / f"{check_account_name(name)}.key"

    def create_account(self, name: str) -> KeyInfo:
        """Generate a new account key ``name``; KeyStoreError if it exists or the name is bad."""
        path = self._account_path(name)
        if path.exists():
            raise KeyExists(f"account key {name!r} already exists at {path}")
        write_secret_file(path, Keypair.generate().to_json())
        return self.info(name)

    def account(self, name: str) -> Keypair:
        path = self._account_path(name)
        if not path.exists():
            raise KeyNotFound(
                f"no account key named {name!r}; `mercato keys list` shows the keys there are"
            )
        return self._load(path)

    def account_names(self) -> list[str]:
        if not self._datadir.accounts_dir.exists():
            return []
        found = (p.stem for p in self._datadir.accounts_dir.glob("*.key"))
        return sorted(n for n in found if _ACCOUNT_NAME.fullmatch(n) and n != NODE_KEY_NAME)

    def info(self, name: str) -> KeyInfo:
        """Public facts of the node key (``"node"``) or of an account key."""
        if name == NODE_KEY_NAME:
            pair, path, kind = self.node_key(), self._datadir.node_key_file, "node"
        else:
            pair, path, kind = self.account(name), self._account_path(name), "account"
        return KeyInfo(
            name=name,
            kind=kind,
            public_key=pair.public_key.hex(),
            address=pair.address,
            peer_id=pair.peer_id if kind == "node" else None,
            path=str(path),
        )

    def list_keys(self) -> list[KeyInfo]:
        return [self.info(NODE_KEY_NAME)] + [self.info(n) for n in self.account_names()]

    def permission_warnings(self) -> list[str]:
        """One message per key file (or the keys dir) that others can access."""
        paths = [self._datadir.keys_dir, self._datadir.node_key_file, self._datadir.token_file]
        paths += [self._account_path(n) for n in self.account_names()]
        return [
            f"{p} is accessible by other users (mode {stat.S_IMODE(p.stat().st_mode):o}); "
            f"run `chmod {'700' if p.is_dir() else '600'} {p}`"
            for p in paths
            if p.exists() and loose_permissions(p)
        ]


def check_account_name(name: str) -> str:
    """``name`` if it can name an account key; KeyStoreError saying why not."""
    if name == NODE_KEY_NAME:
        raise KeyStoreError(f"{NODE_KEY_NAME!r} names the node key; choose another account name")
    if not _ACCOUNT_NAME.fullmatch(name):
        raise KeyStoreError(
            f"invalid account name {name!r}: use 1-32 lowercase letters, digits, "
            "'-' or '_', starting with a letter or digit"
        )
    return name
