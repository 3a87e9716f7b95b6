"""Forwarding the royalties a payee holds for creators.

A state pays a royalty under MIN_PAYOUT to the payee (a new account could not
receive it; see `_book.payable`), and the close records it as held. Each
watcher round, the payee's node pays what it holds on, one system transfer per
creator, several in one transaction:

- to a creator whose account exists, whatever the amount;
- to one whose account does not exist, once what is held for it reaches the
  rent-exempt minimum (until then it stays held, and adds up across channels).

A forward is stored as ``sending``, signed, before it is sent. A later round
asks the ledger whether it landed: paid if it did, due again if it never can
(its blockhash expired), sent again otherwise. So a crash or an outage neither
loses a forward nor pays it twice. The payee pays the forward's fee (one
signature, 5,000 lamports on a cluster).
"""

from __future__ import annotations

import logging

from solders import system_program as sp
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.transaction import Transaction

from ._book import ChannelBook, Held
from ._errors import BlockhashExpired, LedgerError, LedgerUnreachable
from ._ledger import Ledger

log = logging.getLogger("mercato.settlement")

MAX_TRANSFERS = 16  # per transaction: well under Solana's packet limit


async def forward_held(book: ChannelBook, ledger: Ledger, payee: Keypair) -> list[Pubkey]:
    """One round for ``payee``: settle the forwards under way, then forward what is
    due and can be received. Returns the recipients paid in this round. A
    forward that may still land stays under way (LedgerUnreachable is not
    raised); a refusal of the ledger is logged and the amounts stay due."""
    paid = await _settle_sending(book, ledger)
    due: dict[Pubkey, list[Held]] = {}
    for h in book.due(payee.pubkey()):
        due.setdefault(h.recipient, []).append(h)
    minimum = await ledger.rent(0)
    ready = []
    for recipient, rows in sorted(due.items(), key=lambda item: bytes(item[0])):
        if sum(h.amount for h in rows) >= minimum or await ledger.account(recipient) is not None:
            ready.append(recipient)
    for start in range(0, len(ready), MAX_TRANSFERS):
        chunk = {r: due[r] for r in ready[start : start + MAX_TRANSFERS]}
        paid.extend(await _forward(book, ledger, payee, chunk))
    return paid


async def _forward(
    book: ChannelBook, ledger: Ledger, payee: Keypair, chunk: dict[Pubkey, list[Held]]
) -> list[Pubkey]:
    tx = await _transfers(ledger, payee, chunk)
    try:
        await ledger.simulate(tx)
    except LedgerError:
        # One recipient the ledger will not credit (a program, an account that
        # cannot hold more) must not hold up the others: try each alone.
        kept = {}
        for recipient, rows in chunk.items():
            try:
                await ledger.simulate(await _transfers(ledger, payee, {recipient: rows}))
                kept[recipient] = rows
            except LedgerError as exc:
                log.warning(
                    "a royalty held could not be forwarded; it stays held",
                    extra={"recipient": str(recipient), "why": str(exc)},
                )
        if not kept:
            return []
        chunk, tx = kept, await _transfers(ledger, payee, kept)
    signature = str(tx.signatures[0])
    rows = [h for held in chunk.values() for h in held]
    await book.sending(rows, signature, bytes(tx))
    try:
        await ledger.send(tx)
    except LedgerUnreachable:
        return []  # it may still land: the next round asks the ledger
    except LedgerError:
        await book.unsend(signature)
        raise
    await book.forwarded(signature)
    _paid(chunk, signature)
    return list(chunk)


async def _transfers(
    ledger: Ledger, payee: Keypair, chunk: dict[Pubkey, list[Held]]
) -> Transaction:
    instructions = [
        sp.transfer(
            {
                "from_pubkey": payee.pubkey(),
                "to_pubkey": recipient,
                "lamports": sum(h.amount for h in rows),
            }
        )
        for recipient, rows in chunk.items()
    ]
    blockhash = await ledger.blockhash()
    message = Message.new_with_blockhash(instructions, payee.pubkey(), blockhash)
    return Transaction([payee], message, blockhash)


async def _settle_sending(book: ChannelBook, ledger: Ledger) -> list[Pubkey]:
    """Forwards stored as sending (a crash, an outage): paid if they landed, due
    again if they never can, sent again otherwise."""
    paid: list[Pubkey] = []
    for signature, rows in book.sending_now().items():
        tx = Transaction.from_bytes(rows[0].forward or b"")
        try:
            landed = await ledger.landed(signature)
            if landed is None and await ledger.blockhash_expired(tx.message.recent_blockhash):
                landed = bool(await ledger.landed(signature))  # expired: the status is final
            if landed is None:
                try:
                    await ledger.send(tx)
                    landed = True
                except BlockhashExpired:
                    landed = False
                except LedgerUnreachable:
                    continue
                except LedgerError:
                    landed = await ledger.landed(signature)
                    if landed is None:
                        continue
        except LedgerUnreachable:
            continue  # the ledger cannot say yet: it stays under way, asked next round
        if landed:
            await book.forwarded(signature)
            by_recipient: dict[Pubkey, list[Held]] = {}
            for h in rows:
                by_recipient.setdefault(h.recipient, []).append(h)
            _paid(by_recipient, signature)
            paid.extend(by_recipient)
        else:
            await book.unsend(signature)
    return paid


def _paid(chunk: dict[Pubkey, list[Held]], signature: str) -> None:
    for recipient, rows in chunk.items():
        log.info(
            "royalties forwarded",
            extra={
                "recipient": str(recipient),
                "lamports": sum(h.amount for h in rows),
                "signature": signature,
            },
        )
