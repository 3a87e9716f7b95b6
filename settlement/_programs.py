"""The native Solana programs a channel is built from: stake and durable nonce.

solders builds system-program instructions (nonce accounts included) but not
stake-program ones, so those are encoded here in the program's own bincode
layout (an enum tag as little-endian u32, then the fields), and the two account
layouts a channel reads back are decoded here. Every layout was checked
against the stake program running in LiteSVM (tests/settlement).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from solders import sysvar
from solders.hash import Hash
from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

from ._errors import LedgerError

STAKE_PROGRAM = Pubkey.from_string("Stake11111111111111111111111111111111111111")
STAKE_ACCOUNT_SIZE = 200
NONCE_ACCOUNT_SIZE = 80
STAKE_INITIALIZED = 1  # StakeStateV2 tags: 0 uninitialized, 1 initialized, 2 delegated
NONCE_INITIALIZED = 1


def stake_initialize(
    stake: Pubkey, staker: Pubkey, withdrawer: Pubkey, lockup_until: int, custodian: Pubkey
) -> Instruction:
    """Initialize(Authorized{staker, withdrawer}, Lockup{unix_timestamp, epoch 0, custodian})."""
    data = (
        struct.pack("<I", 0)
        + bytes(staker)
        + bytes(withdrawer)
        + struct.pack("<qQ", lockup_until, 0)
        + bytes(custodian)
    )
    return Instruction(
        STAKE_PROGRAM,
        data,
        [AccountMeta(stake, False, True), AccountMeta(sysvar.RENT, False, False)],
    )


def stake_withdraw(
    stake: Pubkey, to: Pubkey, withdrawer: Pubkey, lamports: int, custodian: Pubkey | None
) -> Instruction:
    """Withdraw(lamports); the custodian signs while the lockup is in force."""
    metas = [
        AccountMeta(stake, False, True),
        AccountMeta(to, False, True),
        AccountMeta(sysvar.CLOCK, False, False),
        AccountMeta(sysvar.STAKE_HISTORY, False, False),
        AccountMeta(withdrawer, True, False),
    ]
    if custodian is not None:
        metas.append(AccountMeta(custodian, True, False))
    return Instruction(STAKE_PROGRAM, struct.pack("<IQ", 4, lamports), metas)


@dataclass(frozen=True)
class StakeMeta:
    """What a channel's stake account says about itself."""

    state: int
    rent_reserve: int
    staker: Pubkey
    withdrawer: Pubkey
    lockup_until: int
    lockup_epoch: int
    custodian: Pubkey


def read_stake(data: bytes) -> StakeMeta:
    """Decode StakeStateV2's tag and Meta; LedgerError if it is not a stake account."""
    if len(data) != STAKE_ACCOUNT_SIZE:
        raise LedgerError("that account is not a stake account")
    tag, reserve = struct.unpack_from("<IQ", data, 0)
    lockup_until, epoch = struct.unpack_from("<qQ", data, 76)
    return StakeMeta(
        tag,
        reserve,
        Pubkey(data[12:44]),
        Pubkey(data[44:76]),
        lockup_until,
        epoch,
        Pubkey(data[92:124]),
    )


def read_nonce(data: bytes) -> tuple[Pubkey, Hash]:
    """A durable nonce account's authority and current value."""
    if len(data) != NONCE_ACCOUNT_SIZE:
        raise LedgerError("that account is not a nonce account")
    _version, state = struct.unpack_from("<II", data, 0)
    if state != NONCE_INITIALIZED:
        raise LedgerError("the nonce account is not initialized")
    return Pubkey(data[8:40]), Hash(data[40:72])
