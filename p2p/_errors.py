"""Errors of the p2p layer: `P2PError` and its subclasses (the whole tree is drawn on
`mercato.MercatoError`)."""

from __future__ import annotations

from mercato import MercatoError


class P2PError(MercatoError):
    """An error in the p2p layer: identities, codecs, peers."""


class IdentityError(P2PError):
    """A key could not be created, read or parsed."""
