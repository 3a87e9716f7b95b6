"""Damaged and hostile files get one line that names the file, exit 1, no traceback."""

from pathlib import Path

import pytest

from mercato.node import DataDir

from ..conftest import TEST_ENV, budget, run_cli

GARBAGE = b"\xff\xfe garbage that is neither UTF-8 nor SQLite " * 4
DAMAGE = {
    "node key": ("keys/node.key", GARBAGE),
    "format version": ("format-version", b"\xff\xfe"),
    "config": ("mercato.toml", b'[node]\nname = "\xff"\n'),
    "config nesting": ("mercato.toml", b"x = " + b"[" * 100_000 + b"]" * 100_000),
    "channel book": ("channels.db", GARBAGE),
    "ledger journal": ("ledger.db", GARBAGE),
    "store": ("node.db", GARBAGE),
}


def one_line_naming(done, name: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and name in errors[0], done.stderr


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_data_file_stops_the_daemon_with_one_line_naming_it(
    initialized: DataDir, damage: str
) -> None:
    name, content = DAMAGE[damage]
    (initialized.root / name).write_bytes(content)
    done = run_cli("node", "start", "--data-dir", str(initialized.root), env=TEST_ENV)
    one_line_naming(done, Path(name).name)


@pytest.mark.parametrize(
    "content",
    [b'name = "\xff"\n', b"a = " + b"[" * 100_000 + b"]" * 100_000],
    ids=["not utf-8", "nested"],
)
def test_a_bad_manifest_is_one_line_naming_it(tmp_path: Path, content: bytes) -> None:
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_bytes(content)
    done = run_cli("publish", str(manifest), "--data-dir", str(tmp_path / "none"))
    one_line_naming(done, "MANIFEST.toml")


def test_publishing_dev_zero_fails_at_once() -> None:
    done = run_cli("publish", "/dev/zero", "--data-dir", "/nonexistent", timeout=budget(20))
    one_line_naming(done, "/dev/zero")
