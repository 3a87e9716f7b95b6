"""Errors of commerce (licences, subscriptions, sales and refunds)::

NodeError
└── CommerceError           a licence could not be bought, used or refunded
    ├── BadSignedObject     an offer, licence use or refund request is forged
    ├── LicenceRequired     the listing runs only under a licence this node lacks
    ├── LicenceRefused      the licence shown does not hold up on the ledger
    ├── UnknownLicence      no licence (or sale) of that mint here
    ├── NoSeller            the creator's node cannot be reached
    └── SaleRefused         the creator's node said no; ``code`` says why
"""

from __future__ import annotations

from .._errors import NodeError


class CommerceError(NodeError):
    """A licence could not be bought, used or refunded; the message says why."""


class BadSignedObject(CommerceError):
    """A signed offer, licence use or refund request does not decode or verify."""


class LicenceRequired(CommerceError):
    """The listing runs only for holders of a licence or subscription, and this
    node holds none that covers what was asked: the message names the plans."""


class LicenceRefused(CommerceError):
    """A licence does not hold up on the ledger (forged, expired, revoked, moved)."""


class UnknownLicence(CommerceError):
    """This node holds (or sold) no licence with that mint."""


class NoSeller(CommerceError):
    """The creator's node is offline or unreachable: only it can issue a licence."""


class SaleRefused(CommerceError):
    """The creator's node refused the purchase or refund; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
