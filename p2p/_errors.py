"""The root of mercato's exception tree.

Every error that mercato raises on purpose derives from `MercatoError`; each
top-level package adds one subclass and raises only its own descendants::

    MercatoError
    ├── P2PError            (p2p/)
    │   └── IdentityError   a key file is missing, malformed or unreadable
    └── NodeError           (node/, see node/_errors.py)

Messages are written for the person who will read them: they say what went
wrong and what to do about it. Errors from dependencies are translated where
they enter (`raise IdentityError(...) from exc`).
"""

from __future__ import annotations


class MercatoError(Exception):
    """Base class of every error mercato raises on purpose."""


class P2PError(MercatoError):
    """An error in the p2p layer: identities, codecs, peers."""


class IdentityError(P2PError):
    """A key could not be created, read or parsed."""
