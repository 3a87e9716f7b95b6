"""The rpc ledger: any Solana cluster (or a ``mercato localnet``) over JSON-RPC.

It speaks through solana-py's `AsyncClient`. Sending is the part with care in
it: a transaction is sent with preflight (a refusal comes back at once, with
nothing spent), then its signature's status is polled until it is confirmed,
re-sending the same signed bytes every RESEND_S while it is not (a re-send can
never make it land twice). An RPC that does not answer is retried the same
way. Whether a blockhash expired is the RPC's isBlockhashValid (any
blockhash, not only the ones this object handed out), asked before the status:
once the blockhash is invalid the transaction can no longer land, so a status
found empty after it is final. A transaction not seen once its blockhash
expired is BlockhashExpired (it never landed, and can be built again); past
``confirm_s`` the call gives up with LedgerUnreachable, saying the transaction
may still land. `landed` raises LedgerUnreachable when the RPC does not
answer: "I could not ask" is never "not found".

``now`` reads the Clock sysvar, the time lockups are measured against.
``history`` pages through getSignaturesForAddress, ``landed_transaction`` is
getTransaction (base64, version 0 allowed).
"""

from __future__ import annotations

import struct
from typing import Any

import trio
from solana.exceptions import SolanaRpcException
from solana.rpc.async_api import AsyncClient
from solana.rpc.commitment import Confirmed
from solana.rpc.core import RPCException
from solana.rpc.models import TxOpts
from solders.commitment_config import CommitmentLevel
from solders.errors import SerdeJSONError
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.rpc.config import RpcContextConfig
from solders.rpc.errors import SendTransactionPreflightFailureMessage
from solders.rpc.requests import IsBlockhashValid
from solders.rpc.responses import IsBlockhashValidResp
from solders.signature import Signature
from solders.sysvar import CLOCK
from solders.transaction import VersionedTransaction
from solders.transaction_status import (
    TransactionConfirmationStatus,
    TransactionErrorFieldless,
)

from ._errors import BlockhashExpired, LedgerError, LedgerUnreachable
from ._ledger import HISTORY_LIMIT, AccountInfo, AnyTransaction, LandedTransaction, refusal

RESEND_S = 2.0
POLL_S = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)  # then every 0.5 s
SIGNATURES_PAGE = 1000  # the most getSignaturesForAddress gives at once
# No answer, or not one a Solana RPC gives (a proxy's page, a wrong port).
UNREACHABLE = (SolanaRpcException, SerdeJSONError, OSError, ValueError)
CONFIRMED = (TransactionConfirmationStatus.Confirmed, TransactionConfirmationStatus.Finalized)


class RpcLedger:
    """A ledger behind a JSON-RPC URL. ``name`` is what the node reports
    (``localnet`` or ``rpc``); ``faucet`` whether requestAirdrop may be used."""

    def __init__(
        self,
        url: str,
        name: str = "rpc",
        *,
        faucet: bool = False,
        timeout_s: float = 10.0,
        confirm_s: float = 30.0,
    ) -> None:
        self.url, self.name, self.faucet = url, name, faucet
        self.confirm_s = confirm_s
        self._client = AsyncClient(url, commitment=Confirmed, timeout=timeout_s, http2=False)

    async def aclose(self) -> None:
        await self._client.close()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except RPCException as exc:
            raise LedgerError(
                f"the ledger at {self.url} refused {method}: {_message(exc)}"
            ) from exc
        except UNREACHABLE as exc:
            raise LedgerUnreachable(
                f"the ledger at {self.url} did not answer ({exc}); is it running and reachable?"
            ) from exc

    async def airdrop(self, pubkey: Pubkey, lamports: int) -> str:
        if not self.faucet:
            raise LedgerError(f"the {self.name} ledger has no faucet: fund {pubkey} another way")
        signature = (await self._call("request_airdrop", pubkey, lamports)).value
        await self._confirmed(signature, None)
        return str(signature)

    async def send(self, tx: AnyTransaction) -> str:
        signature = tx.signatures[0]
        await self._confirmed(signature, tx)
        return str(signature)

    async def _confirmed(self, signature: Any, tx: AnyTransaction | None) -> None:
        """Send ``tx`` (if given) and wait for ``signature`` to be confirmed.

        A preflight refusal is believed at once only while no copy was ever taken
        and the ledger says it has not seen the signature: once one was, a refused
        re-send (its blockhash or nonce moved on because it landed, or a lagging
        RPC) settles nothing, and the status decides. Between re-sends the
        blockhash is checked: once it expired with the signature unseen, the
        transaction never landed (BlockhashExpired)."""
        deadline = trio.current_time() + self.confirm_s
        last_error, taken = "no answer yet", False
        while trio.current_time() < deadline:
            if tx is not None:
                try:
                    await self._client.send_raw_transaction(
                        bytes(tx), TxOpts(skip_confirmation=True, preflight_commitment=Confirmed)
                    )
                    taken = True
                except RPCException as exc:
                    err = _preflight_error(exc)
                    last_error = _message(exc)
                    if err is not None and err != TransactionErrorFieldless.AlreadyProcessed:
                        state = await self._status(signature, tx, history=True)
                        if state == "confirmed":
                            return
                        if state is None and not taken:
                            raise refusal(tx, err) from exc
                except UNREACHABLE as exc:
                    last_error = str(exc)  # the RPC may be down: poll, then send again
            resend_at = trio.current_time() + RESEND_S
            for delay in _polls():
                if trio.current_time() >= min(resend_at, deadline):
                    break
                await trio.sleep(delay)
                if await self._status(signature, tx) == "confirmed":
                    return
            if tx is not None and await self._never_landed(signature, tx):
                raise BlockhashExpired("the transaction never landed and its blockhash expired")
        if await self._status(signature, tx, history=True) == "confirmed":
            return
        if tx is not None and await self._never_landed(signature, tx):
            raise BlockhashExpired("the transaction never landed and its blockhash expired")
        raise LedgerUnreachable(
            f"the transaction {signature} was not confirmed within {self.confirm_s:g} s "
            f"({last_error}); it may still land: it will be retried"
        )

    async def _never_landed(self, signature: Any, tx: AnyTransaction) -> bool:
        """Whether ``tx`` can be known never to land: its blockhash expired (asked
        first), then its signature not seen. Its refusal if it landed and failed."""
        if tx.uses_durable_nonce() or not await self.blockhash_expired(tx.message.recent_blockhash):
            return False
        return await self._status(signature, tx, history=True) is None

    async def _status(
        self, signature: Any, tx: AnyTransaction | None, history: bool = False
    ) -> str | None:
        """ "confirmed", "landing" (seen, not yet confirmed), "unknown" (the RPC does
        not answer) or None (the ledger has not seen it). Its refusal if it landed
        and failed."""
        try:
            resp = await self._client.get_signature_statuses([signature], history)
        except (RPCException, *UNREACHABLE):
            return "unknown"
        status = resp.value[0]
        if status is None:
            return None
        if status.err is not None:
            raise refusal(tx, status.err) if tx else LedgerError(str(status.err))
        return "confirmed" if status.confirmation_status in CONFIRMED else "landing"

    async def blockhash_expired(self, blockhash: Hash) -> bool | None:
        """Whether a transaction made on ``blockhash`` can no longer land: the RPC's
        isBlockhashValid, at confirmed commitment (a blockhash the ledger never had
        is not valid either). None if the RPC does not answer."""
        body = IsBlockhashValid(blockhash, RpcContextConfig(CommitmentLevel.Confirmed))
        try:
            resp = await self._client._provider.make_request(body, IsBlockhashValidResp)
        except (RPCException, *UNREACHABLE):
            return None
        return not resp.value

    async def landed(self, signature: str) -> bool | None:
        """True once confirmed, False if it landed and failed (nothing it did
        stayed), None if the ledger has not seen it (or not yet confirmed it);
        LedgerUnreachable if the RPC does not answer."""
        try:
            state = await self._status(Signature.from_string(signature), None, history=True)
        except LedgerError:
            return False
        if state == "unknown":
            raise LedgerUnreachable(
                f"the ledger at {self.url} did not answer whether {signature} landed"
            )
        return True if state == "confirmed" else None

    async def simulate(self, tx: AnyTransaction) -> None:
        versioned = (
            tx if isinstance(tx, VersionedTransaction) else VersionedTransaction.from_legacy(tx)
        )
        resp = await self._call("simulate_transaction", versioned, sig_verify=True)
        if resp.value.err is not None:
            raise refusal(tx, resp.value.err)

    async def account(self, pubkey: Pubkey) -> AccountInfo | None:
        value = (await self._call("get_account_info", pubkey)).value
        if value is None or value.lamports == 0:
            return None
        return AccountInfo(value.lamports, bytes(value.data), value.owner)

    async def balance(self, pubkey: Pubkey) -> int:
        return int((await self._call("get_balance", pubkey)).value)

    async def blockhash(self) -> Hash:
        return (await self._call("get_latest_blockhash")).value.blockhash

    async def rent(self, size: int) -> int:
        return int((await self._call("get_minimum_balance_for_rent_exemption", size)).value)

    async def history(self, address: Pubkey, limit: int = HISTORY_LIMIT) -> list[str]:
        found: list[str] = []
        before: Signature | None = None
        while len(found) < limit:
            asked = min(SIGNATURES_PAGE, limit - len(found))
            page = (
                await self._call("get_signatures_for_address", address, before, None, asked)
            ).value
            found += [str(row.signature) for row in page]
            if len(page) < asked:
                break
            before = page[-1].signature
        return found

    async def landed_transaction(self, signature: str) -> LandedTransaction | None:
        value = (
            await self._call(
                "get_transaction",
                Signature.from_string(signature),
                "base64",
                max_supported_transaction_version=0,
            )
        ).value
        if value is None:
            return None
        tx, meta = value.transaction.transaction, value.transaction.meta
        if not isinstance(tx, VersionedTransaction):
            raise LedgerError(f"the ledger at {self.url} sent {signature} in another encoding")
        succeeded = meta is not None and meta.err is None
        return LandedTransaction(signature, value.slot, value.block_time, tx, succeeded)

    async def now(self) -> int:
        clock = await self.account(CLOCK)
        if clock is None or len(clock.data) < 40:
            raise LedgerError(f"the ledger at {self.url} has no clock sysvar")
        return struct.unpack_from("<q", clock.data, 32)[0]


def _polls() -> Any:
    yield from POLL_S
    while True:
        yield POLL_S[-1]


def _preflight_error(exc: RPCException) -> Any:
    message = exc.args[0] if exc.args else None
    if isinstance(message, SendTransactionPreflightFailureMessage):
        return message.data.err
    return None


def _message(exc: RPCException) -> str:
    message = exc.args[0] if exc.args else exc
    return str(getattr(message, "message", message))
