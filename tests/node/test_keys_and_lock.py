import os
import stat
from pathlib import Path

import pytest

from mercato.node import DataDir, DataDirLock, DataDirLocked, KeyStore, KeyStoreError, init_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_secret_files_readable_by_the_owner_only(datadir: DataDir) -> None:
    result = init_data_dir(datadir)
    assert result.created and result.peer_id.startswith("12D3KooW")
    assert mode(datadir.root) == 0o700
    assert mode(datadir.keys_dir) == 0o700
    for path in [datadir.node_key_file, datadir.accounts_dir / "default.key", datadir.token_file]:
        assert mode(path) == 0o600, path


def test_init_again_changes_nothing(initialized: DataDir) -> None:
    before = {
        p: p.read_bytes() for p in initialized.root.rglob("*") if p.is_file() and p.suffix != ".db"
    }
    result = init_data_dir(initialized)
    assert not result.created
    after = {
        p: p.read_bytes() for p in initialized.root.rglob("*") if p.is_file() and p.suffix != ".db"
    }
    assert before == after


def test_account_keys_are_created_once(initialized: DataDir) -> None:
    keys = KeyStore(initialized)
    info = keys.create_account("alice")
    assert info.kind == "account" and info.peer_id is None
    assert keys.account_names() == ["alice", "default"]
    with pytest.raises(KeyStoreError, match="already exists"):
        keys.create_account("alice")
    with pytest.raises(KeyStoreError, match="invalid account name"):
        keys.create_account("../escape")
    with pytest.raises(KeyStoreError, match="no account key"):
        keys.info("bob")


def test_looser_permissions_are_reported(
    initialized: DataDir, caplog: pytest.LogCaptureFixture
) -> None:
    keys = KeyStore(initialized)
    assert keys.permission_warnings() == []
    os.chmod(initialized.node_key_file, 0o644)
    warnings = keys.permission_warnings()
    assert (
        len(warnings) == 1
        and str(initialized.node_key_file) in warnings[0]
        and "chmod 600" in warnings[0]
    )
    with caplog.at_level("WARNING", logger="mercato"):
        keys.node_key()
    assert "readable by other users" in caplog.text


def test_a_corrupt_key_file_is_a_clear_error(initialized: DataDir) -> None:
    initialized.node_key_file.write_text("[1,2]")
    with pytest.raises(KeyStoreError, match=str(initialized.node_key_file)):
        KeyStore(initialized).node_key()


def test_a_second_lock_on_the_same_data_dir_is_refused(initialized: DataDir) -> None:
    with DataDirLock(initialized), pytest.raises(DataDirLocked, match=f"pid {os.getpid()}"):
        DataDirLock(initialized).acquire()
    with DataDirLock(initialized) as again:  # released on exit
        assert again.held
