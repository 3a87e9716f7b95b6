"""x402 version 2 on the wire, scheme ``exact`` on Solana: what the gateway sends and takes.

The shapes are @x402/core 2.27.0's (``types``, and the zod schemas of
``schemas``), which the official clients parse:

- a call without payment gets **402** with the header ``PAYMENT-REQUIRED``: base64
  of the JSON `payment_required` ``{x402Version: 2, error, resource: {url,
  description, mimeType}, accepts: [requirements]}`` (the same JSON is the body);
  each requirement is ``{scheme: "exact", network, amount, asset, payTo,
  maxTimeoutSeconds, extra: {feePayer, tokenProgram, recentBlockhash?}}``,
  amounts being strings of base units;
- the client pays by sending the call again with ``PAYMENT-SIGNATURE``: base64 of
  the JSON PaymentPayload ``{x402Version: 2, resource?, accepted: requirements,
  payload: {transaction}}`` (the partially signed transaction, base64);
- a settled call answers with ``PAYMENT-RESPONSE``: base64 of the JSON
  SettleResponse ``{success, transaction, network, payer}``.

The server matches ``accepted`` as @x402/core does: every field but ``extra``
equal, and ``extra`` holding every key the server asks, except the ones that
change by themselves (``recentBlockhash``, ``lastValidBlockHeight``).
A refusal names its reason in ``error``: the official facilitator's
``invalidReason`` strings where it has one.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from mercato.settlement import ExactRequirements

from .._errors import NodeError

X402_VERSION = 2
SCHEME = "exact"
MAINNET = "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"
DEVNET = "solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1"
TESTNET = "solana:4uhcVJyU9pJkvQyS88uRDiswHXSCkY3z"
PAYMENT_REQUIRED_HEADER = "payment-required"
PAYMENT_SIGNATURE_HEADER = "payment-signature"
PAYMENT_RESPONSE_HEADER = "payment-response"
DYNAMIC_EXTRA = frozenset({"recentBlockhash", "lastValidBlockHeight"})
"""``extra`` keys a client may hold at other values than the server's now."""
MAX_SIGNATURE_HEADER = 12 * 1024
MAX_DEPTH = 16
"""How deeply a payment's JSON may nest (a real one: 3 levels)."""
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")

# Reasons (the ``error`` of a refusal): the official facilitator's where it has one.
PAYMENT_REQUIRED = "Payment required"  # what the official server says to a call without payment
INVALID_PAYLOAD = "invalid_payload"
INVALID_VERSION = "invalid_x402_version"
NO_MATCHING_REQUIREMENTS = "invalid_payment_requirements"
DUPLICATE = "duplicate_settlement"
SIMULATION_FAILED = "invalid_exact_svm_transaction_simulation_failed"
TRANSACTION_FAILED = "invalid_exact_svm_transaction_failed"
# Ours, where the official facilitator has none.
SETTLEMENT_PENDING = "settlement_pending"
PAYMENT_IN_FLIGHT = "payment_in_flight"


class GatewayRefused(NodeError):
    """The gateway refuses a call: ``status`` is the HTTP status, ``reason`` the x402
    ``error``; the message says what to do."""

    def __init__(
        self, status: int, reason: str, message: str, retry_after: int = 0, run: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after
        self.run = run
        """The run, when it ran and failed (its receipt says how)."""


def requirements_json(req: ExactRequirements, recent_blockhash: str = "") -> dict[str, Any]:
    """The PaymentRequirements of ``req`` (settlement's `ExactRequirements.as_json`),
    with a blockhash the client may build on (it then asks the ledger for none)."""
    wire = req.as_json()
    if recent_blockhash:
        wire["extra"] = {**wire["extra"], "recentBlockhash": recent_blockhash}
    return wire


def accepted_matches(wanted: dict[str, Any], accepted: dict[str, Any]) -> bool:
    """Whether a payment's ``accepted`` requirements are ``wanted`` (as @x402/core's
    ``findMatchingRequirements`` compares them: all but ``extra`` equal, and
    ``extra`` holding each key of ``wanted``'s but the dynamic ones)."""
    extra = accepted.get("extra")
    if not isinstance(extra, dict):
        return False
    core = {k: v for k, v in accepted.items() if k != "extra"}
    wanted_core = {k: v for k, v in wanted.items() if k != "extra"}
    if _canonical(core) != _canonical(wanted_core):
        return False
    return all(
        key in extra and _canonical(extra[key]) == _canonical(value)
        for key, value in wanted["extra"].items()
        if key not in DYNAMIC_EXTRA
    )


def _canonical(value: Any) -> str:
    """JSON with sorted keys, a whole float written as an integer (JavaScript has
    one number type: ``60.0`` is ``60`` there)."""
    return json.dumps(_numbers(value), sort_keys=True, separators=(",", ":"))


def _numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def resource(url: str, description: str) -> dict[str, Any]:
    return {"url": url, "description": description, "mimeType": "application/json"}


def payment_required(
    error: str,
    resource_info: dict[str, Any],
    accepts: list[dict[str, Any]],
    message: str = "",
) -> dict[str, Any]:
    """The PaymentRequired object (header and body of a 402). ``message`` (ours, for
    people) explains ``error``; clients ignore it."""
    body: dict[str, Any] = {
        "x402Version": X402_VERSION,
        "error": error,
        "resource": resource_info,
        "accepts": accepts,
    }
    if message:
        body["message"] = message
    return body


def settle_response(
    success: bool, transaction: str, network: str, payer: str, error: str = ""
) -> dict[str, Any]:
    """The SettleResponse object (the ``PAYMENT-RESPONSE`` header)."""
    answer: dict[str, Any] = {
        "success": success,
        "transaction": transaction,
        "network": network,
        "payer": payer,
    }
    if error:
        answer["errorReason"] = error
    return answer


def encode_header(value: dict[str, Any]) -> str:
    """Base64 of compact JSON (UTF-8), as @x402/core's ``safeBase64Encode``."""
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")


@dataclass(frozen=True)
class PaymentPayload:
    """What a ``PAYMENT-SIGNATURE`` header carries, checked for shape only."""

    accepted: dict[str, Any]
    transaction: str
    """The partially signed transaction, base64 (checked by settlement)."""


def decode_payment_signature(header: str) -> PaymentPayload:
    """Decode a ``PAYMENT-SIGNATURE`` header; GatewayRefused (402,
    ``invalid_payload`` or ``invalid_x402_version``) if it is not a version 2
    PaymentPayload with an ``exact`` transaction."""
    if len(header) > MAX_SIGNATURE_HEADER or not _BASE64.fullmatch(header):
        raise _malformed("the PAYMENT-SIGNATURE header is not base64")
    try:
        value = json.loads(base64.b64decode(header, validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise _malformed("the PAYMENT-SIGNATURE header is not base64 of JSON") from exc
    if not isinstance(value, dict):
        raise _malformed("the PAYMENT-SIGNATURE header is not a JSON object")
    if _deeper_than(value, MAX_DEPTH):
        raise _malformed(f"the payment's JSON nests deeper than {MAX_DEPTH} levels")
    if value.get("x402Version") != X402_VERSION:
        raise GatewayRefused(
            402,
            INVALID_VERSION,
            f"this gateway speaks x402 version {X402_VERSION}: pay with a version 2 client",
        )
    accepted, payload = value.get("accepted"), value.get("payload")
    if not isinstance(accepted, dict) or not isinstance(payload, dict):
        raise _malformed("a version 2 payment has 'accepted' and 'payload' objects")
    transaction = payload.get("transaction")
    if not isinstance(transaction, str) or not transaction:
        raise _malformed("an exact payment on Solana carries payload.transaction (base64)")
    return PaymentPayload(accepted, transaction)


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (decoded JSON) nests more than ``limit`` levels (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _malformed(message: str) -> GatewayRefused:
    return GatewayRefused(402, INVALID_PAYLOAD, message)
