"""A module as the runtime takes it, and its cache key (no wasmtime: the daemon uses it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

Source = bytes | Callable[[], bytes]
"""A module's bytes, or a function that reads them (called only on a cache miss)."""


def module_key(wasm: bytes) -> str:
    """The cache key of a module given as bytes: its SHA-256."""
    return "sha256-" + hashlib.sha256(wasm).hexdigest()
