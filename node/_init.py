"""Creating a data dir: directories, default config, token, keys, store, first events."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ._config import DEFAULT_CONFIG_TOML
from ._files import write_atomic
from ._keys import DEFAULT_ACCOUNT, KeyStore, write_secret_file
from ._lock import DataDirLock
from ._paths import FORMAT_VERSION, DataDir
from ._schema import node_database
from .control import LocalControl


@dataclass(frozen=True)
class InitResult:
    created: bool
    """False if the data dir was already initialized (then nothing changed)."""
    root: str
    peer_id: str
    account_address: str


def init_data_dir(datadir: DataDir) -> InitResult:
    """Create a data dir, or complete one whose creation was interrupted.

    Idempotent: an initialized data dir is checked and left as it is. The
    format-version file is written last, so a dir counts as initialized only
    once everything else is in place. Blocking; raises DataDirLocked if a daemon
    holds the dir, DataDirError if it is of an unknown format.
    """
    keys = KeyStore(datadir)
    if datadir.is_initialized():
        datadir.check_format()
        return InitResult(
            False,
            str(datadir.root),
            keys.node_key().peer_id,
            keys.info(DEFAULT_ACCOUNT).address if DEFAULT_ACCOUNT in keys.account_names() else "",
        )
    datadir.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with DataDirLock(datadir):
        if not datadir.config_file.exists():
            write_atomic(datadir.config_file, DEFAULT_CONFIG_TOML.encode())
        if not datadir.token_file.exists():
            write_secret_file(datadir.token_file, secrets.token_urlsafe(32) + "\n")
        datadir.blobs_dir.mkdir(mode=0o700, exist_ok=True)
        db = node_database(datadir.db_file)
        try:
            control = LocalControl(datadir, db, keys)
            if keys.ensure_node_key():
                node = keys.info("node")
                control.record(
                    "key.created", {"name": "node", "kind": "node", "peer_id": node.peer_id}
                )
            if DEFAULT_ACCOUNT not in keys.account_names():
                control.keys_new(DEFAULT_ACCOUNT)
            control.record("node.initialized", {"format_version": FORMAT_VERSION})
        finally:
            db.close()
        write_atomic(datadir.format_file, f"{FORMAT_VERSION}\n".encode())
    return InitResult(
        True, str(datadir.root), keys.node_key().peer_id, keys.info(DEFAULT_ACCOUNT).address
    )
