"""x402 version 2, scheme `exact` on Solana: the facilitator's checks of a payment.

A buyer's client (the official one: @x402/svm's ExactSvmScheme, or the Python
SDK's) answers a 402 with a transaction, base64 in the payment payload, that
it built and signed for the requirements (`ExactRequirements`):

    0  SetComputeUnitLimit             (compute budget; the client asks 20,000)
    1  SetComputeUnitPrice             (the client asks 1 micro-lamport)
    2  TransferChecked                 of ``amount`` from the buyer's associated
                                       token account to ``pay_to``'s, in ``asset``
    3… Memo (a random hex nonce, or extra.memo), or Lighthouse assertions

Its fee payer is the node (extra.feePayer), whose signature is left empty: the
node pays the fee, so the node must pay for nothing else. `check_exact_payment`
checks it as the official facilitator does, with its ``invalidReason`` for each
refusal (`InvalidReason`, raised as `PaymentInvalid`), and further: the fee
payer may appear in no instruction at all (not as an authority, a source, a
program or a memo signer), the transfer's decimals must be the mint's, the
source may not be the destination, and what the node pays is bounded: exactly
two signatures (its own and the buyer's: each costs the fee payer 5,000
lamports), and a priority fee (compute units times micro-lamports a unit) of at
most ``ExactRequirements.max_priority_fee`` lamports; the official client's
(20,000 units at 1 micro-lamport) is under one lamport. Address lookup
tables are refused (the official facilitator resolves them only with a signer
that can fetch them; the transaction its own client builds has none). Legacy
and version-0 transactions are both taken.

What it cannot see is the ledger: whether the blockhash is recent, the buyer's
account holds enough, the mint's decimals are ``decimals``. The caller
simulates the transaction before it runs anything, and settles with
`cosign_payment` then the ledger. `CheckedPayment.message_hash` is the key
against replays (as the official facilitator's settlement cache): a signature
is no key, the same message could carry another one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from solders.instruction import CompiledInstruction
from solders.keypair import Keypair
from solders.message import to_bytes_versioned
from solders.pubkey import Pubkey
from solders.transaction import VersionedTransaction

from ._errors import PaymentInvalid
from ._receipts import MEMO_PROGRAM
from ._rpc_reads import COMPUTE_BUDGET
from ._spl import (
    TOKEN_PROGRAMS,
    TRANSFER_CHECKED,
    TRANSFER_CHECKED_LEN,
    associated_token_address,
)

LIGHTHOUSE_PROGRAM = Pubkey.from_string("L2TExMFKdjpN9kozasaurPirfHy9P8sbXoAN1qA3S95")
MAX_TRANSACTION_BYTES = 1232  # a transaction's largest wire size, as on a cluster
MAX_PAYLOAD_CHARS = 4 * -(-MAX_TRANSACTION_BYTES // 3)  # its base64
# The official facilitator's cap on the price, micro-lamports per compute unit.
MAX_COMPUTE_UNIT_PRICE = 5_000_000
# Ours on the units (the official client asks 20,000).
MAX_COMPUTE_UNITS = 200_000
MAX_PRIORITY_FEE = 10_000
"""The most priority fee a payment may make the node pay by default, in lamports
(units times micro-lamports a unit, over a million): two signatures' worth."""
SIGNATURES = 2  # the fee payer's and the buyer's
MAX_MEMO_BYTES = 256  # the official client's limit on extra.memo
MIN_INSTRUCTIONS, MAX_INSTRUCTIONS = 3, 7
_SET_COMPUTE_UNIT_LIMIT, _SET_COMPUTE_UNIT_PRICE = 2, 3


class InvalidReason(StrEnum):
    """x402's reasons (the official @x402/svm facilitator's ``invalidReason`` and
    ``errorReason`` strings) for refusing an `exact` payment on Solana."""

    UNSUPPORTED_SCHEME = "invalid_exact_svm_unsupported_scheme"
    NETWORK_MISMATCH = "invalid_exact_svm_network_mismatch"
    MISSING_FEE_PAYER = "invalid_exact_svm_payload_missing_fee_payer"
    FEE_PAYER_NOT_MANAGED = "invalid_exact_svm_fee_payer_not_managed_by_facilitator"
    COULD_NOT_BE_DECODED = "invalid_exact_svm_payload_transaction_could_not_be_decoded"
    SIGNATURE_INVALID = "invalid_exact_svm_payload_signature_invalid"
    EXCESSIVE_SIGNERS = "invalid_exact_svm_payload_excessive_signers"
    INSTRUCTIONS_LENGTH = "invalid_exact_svm_payload_transaction_instructions_length"
    COMPUTE_LIMIT_INSTRUCTION = (
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction"
    )
    COMPUTE_LIMIT_TOO_HIGH = (
        "invalid_exact_svm_payload_transaction_instructions_compute_limit_instruction_too_high"
    )
    COMPUTE_PRICE_INSTRUCTION = (
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction"
    )
    COMPUTE_PRICE_TOO_HIGH = (
        "invalid_exact_svm_payload_transaction_instructions_compute_price_instruction_too_high"
    )
    NO_TRANSFER_INSTRUCTION = "invalid_exact_svm_payload_no_transfer_instruction"
    FEE_PAYER_TRANSFERRING_FUNDS = (
        "invalid_exact_svm_payload_transaction_fee_payer_transferring_funds"
    )
    MINT_MISMATCH = "invalid_exact_svm_payload_mint_mismatch"
    RECIPIENT_MISMATCH = "invalid_exact_svm_payload_recipient_mismatch"
    AMOUNT_MISMATCH = "invalid_exact_svm_payload_amount_mismatch"
    UNKNOWN_FOURTH_INSTRUCTION = "invalid_exact_svm_payload_unknown_fourth_instruction"
    UNKNOWN_FIFTH_INSTRUCTION = "invalid_exact_svm_payload_unknown_fifth_instruction"
    UNKNOWN_SIXTH_INSTRUCTION = "invalid_exact_svm_payload_unknown_sixth_instruction"
    UNKNOWN_SEVENTH_INSTRUCTION = "invalid_exact_svm_payload_unknown_seventh_instruction"
    MEMO_COUNT = "invalid_exact_svm_payload_memo_count"
    MEMO_MISMATCH = "invalid_exact_svm_payload_memo_mismatch"
    FEE_PAYER_MISMATCH = "invalid_exact_svm_fee_payer_mismatch"
    LOOKUP_TABLES = "invalid_exact_svm_smart_wallet_alt_resolution_not_available"
    SIMULATION_FAILED = "invalid_exact_svm_transaction_simulation_failed"
    VERIFICATION_FAILED = "invalid_exact_svm_verification_failed"
    TRANSACTION_FAILED = "invalid_exact_svm_transaction_failed"
    DUPLICATE_SETTLEMENT = "duplicate_settlement"


_UNKNOWN_OPTIONAL = (
    InvalidReason.UNKNOWN_FOURTH_INSTRUCTION,
    InvalidReason.UNKNOWN_FIFTH_INSTRUCTION,
    InvalidReason.UNKNOWN_SIXTH_INSTRUCTION,
    InvalidReason.UNKNOWN_SEVENTH_INSTRUCTION,
)


@dataclass(frozen=True)
class ExactRequirements:
    """What one call costs, as a 402 answer offers it (`as_json`, x402's
    PaymentRequirements): ``amount`` base units of the mint ``asset`` (of
    ``token_program``, with ``decimals``) to ``pay_to``'s associated token
    account, the node ``fee_payer`` paying the fee; ``network`` the ledger's
    CAIP-2 id as x402 names it (``solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1`` for
    devnet). Only the 402 answer and the caller's checks of the payload use
    ``network`` and ``max_timeout_s``: a transaction names neither.
    ``max_priority_fee`` (lamports, not on the wire) bounds the priority fee a
    payment may make the fee payer pay."""

    network: str
    asset: Pubkey
    amount: int
    pay_to: Pubkey
    fee_payer: Pubkey
    decimals: int
    token_program: Pubkey
    max_timeout_s: int
    memo: str | None = None
    max_priority_fee: int = MAX_PRIORITY_FEE

    def __post_init__(self) -> None:
        if not 0 < self.amount < 2**64:
            raise ValueError(f"amount {self.amount} is not a positive u64 of base units")
        if not 0 <= self.decimals <= 255:
            raise ValueError(f"decimals {self.decimals} is not a u8")
        if self.token_program not in TOKEN_PROGRAMS:
            raise ValueError(f"{self.token_program} is not a token program")
        if self.max_timeout_s <= 0:
            raise ValueError("max_timeout_s must be positive")
        if self.memo is not None and not 0 < len(self.memo.encode()) <= MAX_MEMO_BYTES:
            raise ValueError(f"a memo is 1 to {MAX_MEMO_BYTES} bytes")
        if self.max_priority_fee < 0:
            raise ValueError("max_priority_fee must not be negative")

    @property
    def destination(self) -> Pubkey:
        """``pay_to``'s associated token account: where the payment must go."""
        return associated_token_address(self.pay_to, self.asset, self.token_program)

    def as_json(self) -> dict[str, Any]:
        """x402 v2's PaymentRequirements for these, scheme `exact`."""
        extra: dict[str, Any] = {
            "feePayer": str(self.fee_payer),
            "tokenProgram": str(self.token_program),
        }
        if self.memo is not None:
            extra["memo"] = self.memo
        return {
            "scheme": "exact",
            "network": self.network,
            "amount": str(self.amount),
            "asset": str(self.asset),
            "payTo": str(self.pay_to),
            "maxTimeoutSeconds": self.max_timeout_s,
            "extra": extra,
        }


@dataclass(frozen=True)
class CheckedPayment:
    """A payment `check_exact_payment` found to be exactly what was required."""

    tx: VersionedTransaction  # signed by the buyer, the fee payer's signature empty
    payer: Pubkey  # the transfer's authority: the buyer's wallet
    source: Pubkey  # the token account it pays from
    amount: int  # base units
    signature: str  # the buyer's signature, base58
    message_hash: str  # sha256 of the signed message, hex: the key against replays


def _invalid(reason: InvalidReason, message: str) -> PaymentInvalid:
    return PaymentInvalid(reason, f"the payment is refused: {message} ({reason})")


def check_exact_payment(transaction_b64: str, req: ExactRequirements) -> CheckedPayment:
    """The payment in ``transaction_b64`` (an `exact` payload's ``transaction``),
    checked against ``req`` without the ledger (see the module docstring);
    PaymentInvalid, its ``reason`` x402's, if it is not exactly that."""
    tx = _decode(transaction_b64)
    message = tx.message
    keys = list(message.account_keys)
    if keys[0] != req.fee_payer:
        raise _invalid(
            InvalidReason.FEE_PAYER_MISMATCH, f"its fee payer is {keys[0]}, not {req.fee_payer}"
        )
    if not all(tx.verify_with_results()[1:]):
        raise _invalid(
            InvalidReason.SIGNATURE_INVALID,
            "a signature other than the fee payer's is missing or wrong",
        )
    if getattr(message, "address_table_lookups", None):
        raise _invalid(InvalidReason.LOOKUP_TABLES, "it uses address lookup tables")
    instructions = list(message.instructions)
    if not MIN_INSTRUCTIONS <= len(instructions) <= MAX_INSTRUCTIONS:
        raise _invalid(
            InvalidReason.INSTRUCTIONS_LENGTH,
            f"it has {len(instructions)} instructions; a payment has 3 to 7",
        )
    units = _check_compute_limit(instructions[0], keys)
    price = _check_compute_price(instructions[1], keys)
    if units * price > req.max_priority_fee * 1_000_000:
        raise _invalid(
            InvalidReason.COMPUTE_PRICE_TOO_HIGH,
            f"its priority fee ({units} units at {price} micro-lamports) is over the "
            f"{req.max_priority_fee} lamports the fee payer pays at most",
        )
    source, mint, destination, authority, amount, decimals = _transfer(instructions[2], keys, req)
    named = {keys[i] for ix in instructions for i in [ix.program_id_index, *ix.accounts]}
    if authority == req.fee_payer or req.fee_payer in named:
        raise _invalid(
            InvalidReason.FEE_PAYER_TRANSFERRING_FUNDS,
            "the fee payer is named in an instruction: it pays the fee and nothing else",
        )
    if mint != req.asset:
        raise _invalid(InvalidReason.MINT_MISMATCH, f"it pays in {mint}, not {req.asset}")
    if destination != req.destination or source == destination:
        raise _invalid(
            InvalidReason.RECIPIENT_MISMATCH,
            f"it pays {destination}, not {req.pay_to}'s token account {req.destination}",
        )
    if amount != req.amount or decimals != req.decimals:
        raise _invalid(
            InvalidReason.AMOUNT_MISMATCH,
            f"it pays {amount} base units at {decimals} decimals; "
            f"{req.amount} at {req.decimals} are required",
        )
    _check_optional(instructions[3:], keys, req)
    if len(tx.signatures) < SIGNATURES:  # a multisig authority with no signer named: none
        raise _invalid(InvalidReason.SIGNATURE_INVALID, "the buyer has not signed it")
    if len(tx.signatures) > SIGNATURES:  # each one more costs the fee payer a fee
        raise _invalid(
            InvalidReason.EXCESSIVE_SIGNERS,
            f"it has {len(tx.signatures)} signers; a payment has two: the fee payer and the buyer",
        )
    signed = to_bytes_versioned(message)
    return CheckedPayment(
        tx, authority, source, amount, str(tx.signatures[1]), hashlib.sha256(signed).hexdigest()
    )


def payment_key(transaction_b64: str) -> str:
    """The replay key of a payment (`CheckedPayment.message_hash`) without its
    checks; PaymentInvalid if it does not decode."""
    return hashlib.sha256(to_bytes_versioned(_decode(transaction_b64).message)).hexdigest()


def cosign_payment(checked: CheckedPayment, fee_payer: Keypair) -> VersionedTransaction:
    """The checked payment with the fee payer's signature: ready for the ledger."""
    message = checked.tx.message
    if message.account_keys[0] != fee_payer.pubkey():
        raise _invalid(
            InvalidReason.FEE_PAYER_MISMATCH, f"its fee payer is not {fee_payer.pubkey()}"
        )
    signature = fee_payer.sign_message(to_bytes_versioned(message))
    return VersionedTransaction.populate(message, [signature, *checked.tx.signatures[1:]])


def _decode(text: Any) -> VersionedTransaction:
    undecodable = InvalidReason.COULD_NOT_BE_DECODED
    if not isinstance(text, str) or len(text) > MAX_PAYLOAD_CHARS:
        raise _invalid(
            undecodable, f"the transaction is not base64 of at most {MAX_TRANSACTION_BYTES} bytes"
        )
    try:
        raw = base64.b64decode(text, validate=True)
        tx = VersionedTransaction.from_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(undecodable, "the transaction does not decode") from exc
    try:
        tx.sanitize()
    except Exception as exc:  # solders' sanitize error has no common base to name
        raise _invalid(undecodable, "the transaction is malformed") from exc
    if bytes(tx) != raw:  # trailing bytes
        raise _invalid(undecodable, "the transaction has bytes after its end")
    if len(tx.signatures) != tx.message.header.num_required_signatures:
        raise _invalid(undecodable, "the transaction's signatures do not match its signers")
    return tx


def _compute_budget(
    ix: CompiledInstruction, keys: list[Pubkey], tag: int, size: int, reason: InvalidReason
) -> int:
    """The value an instruction of the compute budget program sets (``size`` bytes)."""
    data = bytes(ix.data)
    program = keys[ix.program_id_index]
    if program != COMPUTE_BUDGET or ix.accounts or len(data) != 1 + size or data[0] != tag:
        what = "SetComputeUnitLimit" if tag == _SET_COMPUTE_UNIT_LIMIT else "SetComputeUnitPrice"
        raise _invalid(reason, f"instruction {tag - 2} must be the compute budget's {what}")
    return int.from_bytes(data[1:], "little")


def _check_compute_limit(ix: CompiledInstruction, keys: list[Pubkey]) -> int:
    """The compute units it asks."""
    reason = InvalidReason.COMPUTE_LIMIT_INSTRUCTION
    units = _compute_budget(ix, keys, _SET_COMPUTE_UNIT_LIMIT, 4, reason)
    if units > MAX_COMPUTE_UNITS:
        raise _invalid(
            InvalidReason.COMPUTE_LIMIT_TOO_HIGH,
            f"it asks {units} compute units; at most {MAX_COMPUTE_UNITS}",
        )
    return units


def _check_compute_price(ix: CompiledInstruction, keys: list[Pubkey]) -> int:
    """The micro-lamports a compute unit it offers."""
    reason = InvalidReason.COMPUTE_PRICE_INSTRUCTION
    price = _compute_budget(ix, keys, _SET_COMPUTE_UNIT_PRICE, 8, reason)
    if price > MAX_COMPUTE_UNIT_PRICE:
        raise _invalid(
            InvalidReason.COMPUTE_PRICE_TOO_HIGH,
            f"it offers {price} micro-lamports a compute unit; at most {MAX_COMPUTE_UNIT_PRICE}",
        )
    return price


def _transfer(
    ix: CompiledInstruction, keys: list[Pubkey], req: ExactRequirements
) -> tuple[Pubkey, Pubkey, Pubkey, Pubkey, int, int]:
    """The third instruction as a TransferChecked of ``req``'s token program:
    source, mint, destination, authority, amount, decimals."""
    data = bytes(ix.data)
    accounts = list(ix.accounts)
    if (
        keys[ix.program_id_index] != req.token_program
        or len(data) != TRANSFER_CHECKED_LEN
        or data[0] != TRANSFER_CHECKED
        or len(accounts) < 4  # more: the signers of a multisig authority
    ):
        raise _invalid(
            InvalidReason.NO_TRANSFER_INSTRUCTION,
            f"instruction 2 must be a TransferChecked of {req.token_program}",
        )
    source, mint, destination, authority = (keys[i] for i in accounts[:4])
    amount = int.from_bytes(data[1:9], "little")
    return source, mint, destination, authority, amount, data[9]


def _check_optional(
    instructions: list[CompiledInstruction], keys: list[Pubkey], req: ExactRequirements
) -> None:
    """Instructions 3 to 6: memos and Lighthouse assertions only; the memo
    ``req`` names, exactly once, if it names one."""
    memos = []
    for i, ix in enumerate(instructions):
        program = keys[ix.program_id_index]
        if program == MEMO_PROGRAM:
            memos.append(bytes(ix.data))
        elif program != LIGHTHOUSE_PROGRAM:
            raise _invalid(_UNKNOWN_OPTIONAL[i], f"instruction {i + 3} is of {program}")
    if req.memo is None:
        return
    if len(memos) != 1:
        raise _invalid(InvalidReason.MEMO_COUNT, f"it has {len(memos)} memos; one is required")
    if memos[0] != req.memo.encode():
        raise _invalid(InvalidReason.MEMO_MISMATCH, "its memo is not the one required")
