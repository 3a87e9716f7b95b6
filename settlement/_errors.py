"""Errors of settlement::

MercatoError                (p2p)
└── SettlementError
    ├── LedgerError         the ledger refused a transaction or cannot be read
    │   └── LockupInForce   a refund before the channel's lockup ends
    └── ChannelError        a channel state that does not hold up (amounts,
        │                   signatures, accounts): it is refused, nothing stored
        └── PaymentShort    sound, but it does not cover this task
"""

from __future__ import annotations

from p2p import MercatoError


class SettlementError(MercatoError):
    """An error of payment channels or the ledger."""


class LedgerError(SettlementError):
    """The ledger refused a transaction, or an account is not what it should be."""


class LockupInForce(LedgerError):
    """The stake account's lockup has not ended: only the payee can move funds yet."""


class ChannelError(SettlementError):
    """A channel state or its accounts do not hold up; the message says what."""


class PaymentShort(ChannelError):
    """The payment is sound but its credit does not cover the task (the payer counted
    a price as unused that the payee had used): pay again."""
