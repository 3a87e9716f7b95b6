"""Compiled modules on disk, keyed by build id and engine, so a warm start skips compiling.

One file per module: the SHA-256 of the serialized module, then the module as
wasmtime serialized it. A file whose digest does not match (a torn write, a
flipped bit) or that this engine refuses (another wasmtime version or
configuration) is deleted and the module compiled again. Files are written to
a temporary name and renamed, so a reader never sees half a file.

Only the node writes this directory; the digest catches corruption, not an
attacker with write access to the data dir (who could replace the node itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from pathlib import Path

from wasmtime import Engine, Module, WasmtimeError

log = logging.getLogger("mercato.runtime")
STALE_TMP_S = 600.0  # older than any compile: its writer is gone


class ModuleCache:
    def __init__(self, root: Path, engine: Engine, engine_key: str) -> None:
        self.dir = root / engine_key
        self._engine = engine
        self.hits = 0
        self.misses = 0
        self._sweep()

    def _sweep(self) -> None:
        """Remove temporary files that a killed worker left half written."""
        cutoff = time.time() - STALE_TMP_S
        with contextlib.suppress(OSError):
            for tmp in self.dir.glob("*.tmp*"):
                with contextlib.suppress(OSError):
                    if tmp.stat().st_mtime < cutoff:
                        tmp.unlink()

    def _path(self, key: str) -> Path:
        # Hashed: a build id never becomes a path of its own choosing.
        return self.dir / (hashlib.sha256(key.encode()).hexdigest() + ".cwasm")

    def load(self, key: str) -> Module | None:
        """The cached module for ``key``, or None (absent, corrupt or stale: then removed)."""
        path = self._path(key)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        digest, body = data[:32], data[32:]
        try:
            if hashlib.sha256(body).digest() != digest:
                raise ValueError("digest mismatch")
            module = Module.deserialize(self._engine, body)
        except (ValueError, WasmtimeError) as exc:
            log.warning("dropping a bad compiled-module cache entry", extra={"why": str(exc)})
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        self.hits += 1
        return module

    def save(self, key: str, module: Module) -> None:
        """Store ``module`` for ``key``; a failure to write only costs a later compile."""
        body = bytes(module.serialize())
        path = self._path(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(hashlib.sha256(body).digest() + body)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("cannot write the compiled-module cache", extra={"why": str(exc)})
            with contextlib.suppress(OSError):
                tmp.unlink()
