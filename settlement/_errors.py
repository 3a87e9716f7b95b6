"""Errors of settlement::

MercatoError                (mercato)
└── SettlementError
    ├── LedgerError         the ledger refused a transaction or cannot be read
    │   ├── LockupInForce   a refund before the channel's lockup ends
    │   ├── BlockhashExpired  the transaction must be built again (new blockhash)
    │   └── LedgerUnreachable  no answer, or no confirmation: it may still land
    ├── ChannelError        a channel state that does not hold up (amounts,
    │   │                   signatures, accounts): it is refused, nothing stored
    │   └── PaymentShort    sound, but it does not cover this task
    ├── LicenceError        a licence's terms, purchase or token that does not
    │                       hold up: it is refused
    └── PaymentInvalid      an x402 payment (a partially signed transfer) that
                            is not exactly what was required; ``.reason`` is
                            x402's invalidReason
"""

from __future__ import annotations

from mercato import MercatoError


class SettlementError(MercatoError):
    """An error of payment channels or the ledger."""


class LedgerError(SettlementError):
    """The ledger refused a transaction, or an account is not what it should be."""


class LockupInForce(LedgerError):
    """The stake account's lockup has not ended: only the payee can move funds yet."""


class BlockhashExpired(LedgerError):
    """The transaction's blockhash is too old (or was never seen): build it again with
    a fresh one. It did not land."""


class LedgerUnreachable(LedgerError):
    """The ledger did not answer, or did not confirm in time: what was sent may still
    land. Retry later; the same signed transaction can be sent again safely."""


class ChannelError(SettlementError):
    """A channel state or its accounts do not hold up; the message says what."""


class PaymentShort(ChannelError):
    """The payment is sound but its credit does not cover the task (the payer counted
    a price as unused that the payee had used): pay again."""


class LicenceError(SettlementError):
    """A licence's terms, its purchase transaction or its token on the ledger do not
    hold up; the message says what."""


class PaymentInvalid(SettlementError):
    """An x402 `exact` payment that is not exactly the transfer required: the
    message says what, ``reason`` is the official facilitator's ``invalidReason``
    for it (``invalid_exact_svm_payload_amount_mismatch``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
