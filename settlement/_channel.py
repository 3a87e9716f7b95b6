"""A unidirectional payment channel built from native programs only.

    open     the payer creates a stake account holding the deposit D (withdrawer
             the payer, lockup until T with the payee as custodian, a staker
             key nobody holds) and a durable nonce account whose authority is
             the payee
    pay      for cumulative payouts (payee and creators), the payer signs a
             transaction, its blockhash the nonce's value, that advances the
             nonce and withdraws each payout and D minus their sum back to the
             payer; that half-signed transaction *is* the channel state, and it
             never expires
    close    the payee adds its signature to the latest state and submits it
             before T; the nonce advances, so no older state can be replayed
    refund   after T the payer alone withdraws what is left

The state leaves the stake account's rent reserve (and any lamports someone
sent it) in place for the payer to take after T: a state that had to empty the
account exactly could be blocked by anyone sending it one lamport. Each payout
is 0 or at least MIN_PAYOUT (what a new account needs to exist), and the
return to the payer is left out below it, so no state fails on rent. A smaller
amount owed to a creator is paid to the payee instead, which holds it and
forwards it once the ledger can take it (see `_book.payable` and `_forward`).

What each side must still watch (the payee bears it; it is bounded by how much
it serves before it closes):
- while the lockup holds, the payer (as withdrawer) can make itself the staker
  and then delegate the stake, or split it away into another account and put
  the staker back, after which no state can be closed. `check_channel` sees
  both (the account's state, and its lamports against the deposit), so a
  payee checks the accounts before it serves and closes before the unsettled
  amount grows;
- a failed close of a durable-nonce transaction still advances the nonce on a
  real cluster, voiding every state: the payee simulates before it submits;
- the payee needs lamports of its own to pay the close's fee (two signatures);
- the payee (as custodian) can extend the lockup again and again, holding the
  unspent deposit, and (as nonce authority) can take the nonce account's rent.
  Neither takes more of the deposit than the payer signed.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from typing import Literal

from solders import system_program as sp
from solders import sysvar
from solders.hash import Hash
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import Transaction

from ._cosign import cosign
from ._errors import ChannelError
from ._programs import (
    STAKE_ACCOUNT_SIZE,
    STAKE_INITIALIZED,
    STAKE_PROGRAM,
    StakeMeta,
    stake_initialize,
    stake_withdraw,
)
from ._receipts import Commitment, memo_instruction, message_receipts

MAX_TRANSACTION_BYTES = 1232  # Solana's packet limit
MAX_RECIPIENTS = 8  # payee and creators in one state: stays well under the limit
BPS = 10_000
MIN_PAYOUT = 890_880  # the rent-exempt minimum of an empty account: a new one needs it
MIN_LIFETIME_S = 600  # a channel that ends sooner leaves the payee no time to close
# Accounts no payout may go to: the runtime refuses to credit them.
RESERVED = frozenset(
    (
        sp.ID,
        STAKE_PROGRAM,
        Pubkey.from_string("Vote111111111111111111111111111111111111111"),
        Pubkey.from_string("Sysvar1111111111111111111111111111111111111"),
        sysvar.CLOCK,
        sysvar.RENT,
        sysvar.REWARDS,
        sysvar.STAKE_HISTORY,
        sysvar.RECENT_BLOCKHASHES,
        sysvar.EPOCH_SCHEDULE,
        sysvar.INSTRUCTIONS,
        sysvar.SLOT_HASHES,
    )
)


class _Claimed(enum.Enum):
    CLAIMED = "claimed"


CLAIMED = _Claimed.CLAIMED
"""`check_state`'s default: the receipts commitment the state itself carries."""


def no_staker(stake: Pubkey) -> Pubkey:
    """The staker authority of a channel: a key derived from the stake account that
    nobody holds (it is a hash, not a generated key pair)."""
    return Pubkey(hashlib.sha256(b"mercato channel staker\0" + bytes(stake)).digest())


@dataclass(frozen=True)
class ChannelTerms:
    """What both sides agreed when the channel opened; enough to check any state."""

    payer: Pubkey
    payee: Pubkey
    stake: Pubkey
    nonce: Pubkey
    deposit: int
    expires: int  # unix seconds: the lockup's end, T

    def to_wire(self) -> dict[str, object]:
        return {
            "payer": str(self.payer),
            "payee": str(self.payee),
            "stake": str(self.stake),
            "nonce": str(self.nonce),
            "deposit": self.deposit,
            "expires": self.expires,
        }

    @classmethod
    def from_wire(cls, obj: dict[str, object]) -> ChannelTerms:
        try:
            keys = [Pubkey.from_string(str(obj[k])) for k in ("payer", "payee", "stake", "nonce")]
            deposit, expires = obj["deposit"], obj["expires"]
        except (KeyError, TypeError, ValueError) as exc:
            raise ChannelError(f"malformed channel terms: {exc}") from exc
        if type(deposit) is not int or type(expires) is not int or deposit <= 0 or expires <= 0:
            raise ChannelError("a channel's deposit and expiry are whole numbers above 0")
        if len(set(keys)) != 4:
            raise ChannelError("a channel's payer, payee, stake and nonce are four accounts")
        payer, payee, stake, nonce = keys
        return cls(payer, payee, stake, nonce, deposit, expires)


def open_transaction(
    payer: Keypair,
    payee: Pubkey,
    deposit: int,
    expires: int,
    stake_rent: int,
    nonce_rent: int,
    blockhash: Hash,
) -> tuple[Transaction, ChannelTerms]:
    """The payer's transaction that opens a channel, and its terms."""
    if deposit <= 0:
        raise ChannelError("a channel needs a deposit above 0 lamports")
    stake, nonce = Keypair(), Keypair()
    instructions = [
        sp.create_account(
            {
                "from_pubkey": payer.pubkey(),
                "to_pubkey": stake.pubkey(),
                "lamports": stake_rent + deposit,
                "space": STAKE_ACCOUNT_SIZE,
                "owner": STAKE_PROGRAM,
            }
        ),
        stake_initialize(stake.pubkey(), no_staker(stake.pubkey()), payer.pubkey(), expires, payee),
        *sp.create_nonce_account(payer.pubkey(), nonce.pubkey(), payee, nonce_rent),
    ]
    message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
    tx = Transaction([payer, stake, nonce], message, blockhash)
    terms = ChannelTerms(payer.pubkey(), payee, stake.pubkey(), nonce.pubkey(), deposit, expires)
    return tx, terms


def state_message(
    terms: ChannelTerms,
    nonce_value: Hash,
    payouts: dict[Pubkey, int],
    *,
    receipts: Commitment | None = None,
) -> Message:
    """The message of the state paying ``payouts`` (cumulative lamports per recipient),
    with a memo of the payer's ``receipts`` commitment (`_receipts`) last; None: no
    memo (states signed before receipts were committed)."""
    total = sum(payouts.values())
    if any(v < 0 for v in payouts.values()) or total > terms.deposit:
        raise ChannelError(f"payouts of {total} lamports exceed the deposit of {terms.deposit}")
    if len(payouts) > MAX_RECIPIENTS:
        raise ChannelError(f"a state pays at most {MAX_RECIPIENTS} recipients")
    check_recipients(terms, payouts)
    for recipient, amount in payouts.items():
        if 0 < amount < MIN_PAYOUT and recipient != terms.payee:  # the payee exists: it pays fees
            raise ChannelError(
                f"a payout to {recipient} is {amount} lamports; below {MIN_PAYOUT} it must wait"
            )
    instructions = [
        sp.advance_nonce_account({"nonce_pubkey": terms.nonce, "authorized_pubkey": terms.payee})
    ]
    for recipient in sorted(payouts, key=bytes):
        if payouts[recipient]:
            instructions.append(
                stake_withdraw(terms.stake, recipient, terms.payer, payouts[recipient], terms.payee)
            )
    if terms.deposit - total >= MIN_PAYOUT:  # less stays for the refund after T
        instructions.append(
            stake_withdraw(
                terms.stake, terms.payer, terms.payer, terms.deposit - total, terms.payee
            )
        )
    if receipts is not None:
        try:
            instructions.append(memo_instruction(receipts))
        except ValueError as exc:
            raise ChannelError(str(exc)) from exc
    return Message.new_with_blockhash(instructions, terms.payee, nonce_value)


def check_recipients(terms: ChannelTerms, owed: dict[Pubkey, int]) -> None:
    """ChannelError if anyone in ``owed`` is an account a channel cannot pay (its
    own accounts, the payer, programs and sysvars): checked for every amount owed,
    the ones the payee holds and forwards included."""
    for recipient in owed:
        if recipient in (terms.payer, terms.stake, terms.nonce) or recipient in RESERVED:
            raise ChannelError(f"{recipient} cannot be paid from a channel")


def sign_state(
    terms: ChannelTerms,
    nonce_value: Hash,
    payouts: dict[Pubkey, int],
    payer: Keypair,
    *,
    receipts: Commitment | None = None,
) -> bytes:
    """The payer's half-signed state: the channel update it sends with a payment,
    committing to the ``receipts`` it has verified on the channel so far."""
    if payer.pubkey() != terms.payer:
        raise ChannelError("only the channel's payer signs its states")
    message = state_message(terms, nonce_value, payouts, receipts=receipts)
    tx = Transaction.new_unsigned(message)
    tx.partial_sign([payer], message.recent_blockhash)
    return bytes(tx)


def check_state(
    terms: ChannelTerms,
    nonce_value: Hash,
    payouts: dict[Pubkey, int],
    state: bytes,
    *,
    receipts: Commitment | Literal[_Claimed.CLAIMED] | None = CLAIMED,
) -> Transaction:
    """The payee's check of a state: exactly the transaction it expects for these
    payouts and this ``receipts`` commitment (by default the one the state claims,
    which `state_receipts` reads; None: no memo), with a valid payer signature.
    ChannelError otherwise."""
    tx = _decoded(state)
    if receipts is CLAIMED:
        receipts = message_receipts(tx.message)
    expected = state_message(terms, nonce_value, payouts, receipts=receipts)
    if tx.message != expected:
        raise ChannelError("the state does not pay what was agreed (amounts, accounts or nonce)")
    signers = list(expected.account_keys[: expected.header.num_required_signatures])
    if len(tx.signatures) != len(signers) or terms.payer not in signers:
        raise ChannelError("the state has the wrong number of signatures")
    payer_signature = tx.signatures[signers.index(terms.payer)]
    if not payer_signature.verify(terms.payer, bytes(expected)):
        raise ChannelError("the state is not signed by the channel's payer")
    # Rebuilt from what was checked: nothing else the sender put in the bytes survives.
    canonical = [payer_signature if k == terms.payer else Signature.default() for k in signers]
    return Transaction.populate(expected, canonical)


def _decoded(state: bytes) -> Transaction:
    if len(state) > MAX_TRANSACTION_BYTES:
        raise ChannelError("the state is larger than a Solana transaction")
    try:
        return Transaction.from_bytes(state)
    except Exception as exc:
        raise ChannelError("the state is not a Solana transaction") from exc


def state_receipts(state: bytes) -> Commitment | None:
    """The receipts commitment a state claims (not checked: `check_state` does
    that), None if it carries none. ChannelError if its memo is not one."""
    return message_receipts(_decoded(state).message)


def countersign(checked: Transaction, payee: Keypair) -> Transaction:
    """The payee's signature on a state `check_state` returned: ready to submit."""
    return cosign(checked, payee, ChannelError, "payee", "state")


def refund_transaction(
    terms: ChannelTerms, payer: Keypair, lamports: int, blockhash: Hash
) -> Transaction:
    """After T: the payer alone takes ``lamports`` (what is left) back."""
    instruction = stake_withdraw(terms.stake, terms.payer, terms.payer, lamports, None)
    message = Message.new_with_blockhash([instruction], terms.payer, blockhash)
    return Transaction([payer], message, blockhash)


def check_channel(
    terms: ChannelTerms,
    stake_lamports: int,
    stake: StakeMeta,
    nonce_authority: Pubkey,
    now: int,
) -> None:
    """The payee's check of a channel's accounts, before it serves on it and again
    before every task: ChannelError unless a state can still close it."""
    if nonce_authority != terms.payee:
        raise ChannelError("the channel's nonce account is not the payee's")
    if terms.expires < now + MIN_LIFETIME_S:
        raise ChannelError("the channel ends too soon to be closed safely")
    check_stake(terms, stake, stake_lamports)


def check_stake(terms: ChannelTerms, meta: StakeMeta, lamports: int) -> None:
    """ChannelError unless the stake account is still exactly what was opened: not
    delegated, the deposit all there, the payer its withdrawer, the payee its
    custodian until T."""
    if meta.state != STAKE_INITIALIZED:
        raise ChannelError("the channel's stake account was delegated: no state can close it")
    if lamports < meta.rent_reserve + terms.deposit:
        raise ChannelError("the channel's deposit was moved out of its stake account")
    if meta.staker != no_staker(terms.stake):
        raise ChannelError("the channel's stake account has another staker than agreed")
    if (meta.withdrawer, meta.custodian) != (terms.payer, terms.payee):
        raise ChannelError("the channel's stake account changed hands")
    if meta.lockup_until != terms.expires:
        raise ChannelError(
            f"the channel's lockup moved from {terms.expires} to {meta.lockup_until}"
        )


def split(price: int, royalty_bps: int) -> tuple[int, int]:
    """A task's price as (provider's share, creator's royalty), in lamports."""
    if price < 0 or not 0 <= royalty_bps <= BPS:
        raise ChannelError("a price is >= 0 and a royalty between 0 and 10000 basis points")
    royalty = price * royalty_bps // BPS
    return price - royalty, royalty
