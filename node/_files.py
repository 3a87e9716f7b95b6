"""Files: crash-safe writes, and bounded reads of the TOML files people write.

A write leaves a file with either its old content or its new one, never half.

Each write goes to a uniquely named temporary file in the same directory, is
fsynced, then renamed (or hard-linked, to refuse overwriting) into place, and
the directory is fsynced so that the new name survives a power loss.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path
from typing import Any

from ._errors import FileUnreadable, NodeError

MAX_TOML_BYTES = 1024 * 1024


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    tmp = _write_temp(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Create ``path`` with ``data`` atomically and durably; FileExistsError if it exists."""
    tmp = _write_temp(path, data, mode)
    try:
        os.link(tmp, path)  # atomic, and refuses to replace an existing file
    finally:
        tmp.unlink()
    _fsync_dir(path.parent)


def read_toml(
    path: Path, *, limit: int = MAX_TOML_BYTES, error: type[NodeError] = FileUnreadable
) -> dict[str, Any]:
    """A TOML file, read at most ``limit`` bytes of it (so /dev/zero fails at once).

    FileNotFoundError if it does not exist; ``error``, naming the file and what
    is wrong with it, if it cannot be read, is too large, is not UTF-8 or is not
    TOML (deep nesting included).
    """
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(f"{path} is over {limit} bytes: is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path} is not UTF-8 text (byte {exc.start + 1}): save it as UTF-8") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path} is not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise error(f"{path} nests too deeply to be read") from exc
