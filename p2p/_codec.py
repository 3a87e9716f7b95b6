"""Canonical CBOR and domain-separated signing payloads.

Every signed object in mercato is canonical CBOR signed over
``b"mercato/<kind>/v1\\0" + canonical_cbor(body)`` so that a signature made for
one kind of object can never be replayed as another.
"""

from __future__ import annotations

import re
from typing import Any

import cbor2

_KIND = re.compile(r"^[a-z][a-z0-9._-]{0,63}$")


def canonical_cbor(obj: Any) -> bytes:
    """Encode ``obj`` as canonical (deterministic) CBOR."""
    return cbor2.dumps(obj, canonical=True)


def signing_payload(kind: str, body: Any) -> bytes:
    """The exact bytes that are signed for an object of ``kind``."""
    if not _KIND.match(kind):
        raise ValueError(f"invalid signing kind {kind!r}")
    return b"mercato/" + kind.encode() + b"/v1\0" + canonical_cbor(body)
