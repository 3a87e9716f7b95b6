"""settlement: payment channels closed on Solana, royalties, and the ledgers.

A channel (`_channel`) is a stake account with a lockup and the payee as
custodian plus a durable nonce owned by the payee; its states are payer-signed
transactions. `_programs` encodes the native programs it is built from;
`_ledger` holds the ledger interface and the embedded (in-process LiteSVM)
ledger, `_rpc` the ledger behind any Solana JSON-RPC URL. The localnet, one
ledger that processes on one machine share: `_cluster` keeps slots on a clock,
a blockhash window and the history as a cluster does, `_localnet` answers its
JSON-RPC (with `_rpc_reads`, the read-only methods), `_pubsub` its WebSocket
subscriptions;
`_book` keeps each channel's amounts and latest state on disk, durable before
acknowledged; `_watcher` closes channels before T and refunds after;
`_forward` pays on the royalties a close left with the payee for creators.
`_licence` sells licences and subscriptions as Token-2022 tokens, minted in the
transaction that pays the creator (`_token2022` encodes their instructions).
`_spl` encodes the instructions both token programs share and reads mints and
token accounts; `_testmint` is the SPL token of local ledgers, the same on
every one, which their faucets grant with the lamports; `_x402` checks an x402
`exact` payment (a buyer's partially signed TransferChecked, the node its fee
payer) as the official facilitator does, and co-signs it.
`_receipts`: every state carries, in a memo, the payer's commitment to the
task receipts it verified on the channel (a Merkle root and their count), so
a close names the receipts it settles; it also finds a channel's close in a
ledger's history, where a receipt's Merkle path is checked against it.
Errors (`_errors`) are rooted in `SettlementError`.

May import p2p; must not import node, crdt or runtime.
"""

from typing import TYPE_CHECKING, Any

from ._book import Channel as Channel
from ._book import ChannelBook as ChannelBook
from ._book import Held as Held
from ._book import held as held
from ._book import open_channel_book as open_channel_book
from ._book import payable as payable
from ._book import payable_v1 as payable_v1
from ._channel import (
    MAX_RECIPIENTS as MAX_RECIPIENTS,
)
from ._channel import (
    MAX_TRANSACTION_BYTES as MAX_TRANSACTION_BYTES,
)
from ._channel import (
    MIN_PAYOUT as MIN_PAYOUT,
)
from ._channel import (
    ChannelTerms as ChannelTerms,
)
from ._channel import (
    check_channel as check_channel,
)
from ._channel import (
    check_stake as check_stake,
)
from ._channel import (
    check_state as check_state,
)
from ._channel import (
    countersign as countersign,
)
from ._channel import (
    open_transaction as open_transaction,
)
from ._channel import (
    refund_transaction as refund_transaction,
)
from ._channel import (
    sign_state as sign_state,
)
from ._channel import (
    split as split,
)
from ._channel import (
    state_message as state_message,
)
from ._channel import (
    state_receipts as state_receipts,
)
from ._cluster import ClusterLedger as ClusterLedger
from ._cluster import open_cluster_ledger as open_cluster_ledger
from ._errors import BlockhashExpired as BlockhashExpired
from ._errors import ChannelError as ChannelError
from ._errors import LedgerError as LedgerError
from ._errors import LedgerUnreachable as LedgerUnreachable
from ._errors import LicenceError as LicenceError
from ._errors import LockupInForce as LockupInForce
from ._errors import PaymentInvalid as PaymentInvalid
from ._errors import PaymentShort as PaymentShort
from ._errors import SettlementError as SettlementError
from ._forward import forward_held as forward_held
from ._ledger import AccountInfo as AccountInfo
from ._ledger import EmbeddedLedger as EmbeddedLedger
from ._ledger import LandedTransaction as LandedTransaction
from ._ledger import Ledger as Ledger
from ._ledger import open_embedded_ledger as open_embedded_ledger
from ._licence import TOKEN_2022 as TOKEN_2022
from ._licence import Licence as Licence
from ._licence import LicenceTerms as LicenceTerms
from ._licence import check_licence as check_licence
from ._licence import check_purchase as check_purchase
from ._licence import cosign_purchase as cosign_purchase
from ._licence import licence_account as licence_account
from ._licence import licence_mint as licence_mint
from ._licence import mint_size as mint_size
from ._licence import new_seed as new_seed
from ._licence import purchase_message as purchase_message
from ._licence import purchase_transaction as purchase_transaction
from ._licence import read_licence as read_licence
from ._licence import revoke_transaction as revoke_transaction
from ._localnet import MAX_BODY as MAX_RPC_BODY
from ._localnet import LocalnetRpc as LocalnetRpc
from ._programs import NONCE_ACCOUNT_SIZE as NONCE_ACCOUNT_SIZE
from ._programs import STAKE_ACCOUNT_SIZE as STAKE_ACCOUNT_SIZE
from ._programs import StakeMeta as StakeMeta
from ._programs import read_nonce as read_nonce
from ._programs import read_stake as read_stake
from ._pubsub import Limits as PubSubLimits
from ._pubsub import PubSubHub as PubSubHub
from ._pubsub import Session as PubSubSession
from ._receipts import EMPTY_ROOT as EMPTY_ROOT
from ._receipts import MEMO_PROGRAM as MEMO_PROGRAM
from ._receipts import Close as Close
from ._receipts import Frontier as Frontier
from ._receipts import find_close as find_close
from ._receipts import merkle_path as merkle_path
from ._receipts import merkle_root as merkle_root
from ._receipts import parse_receipts_memo as parse_receipts_memo
from ._receipts import receipt_leaf as receipt_leaf
from ._receipts import receipts_memo as receipts_memo
from ._receipts import verify_path as verify_path
from ._spl import TOKEN_PROGRAM as TOKEN_PROGRAM
from ._spl import MintInfo as MintInfo
from ._spl import TokenAccount as TokenAccount
from ._spl import TokenBalance as TokenBalance
from ._spl import associated_token_address as associated_token_address
from ._spl import create_ata_idempotent as create_ata_idempotent
from ._spl import mint_to_checked as mint_to_checked
from ._spl import read_mint as read_mint
from ._spl import read_token_account as read_token_account
from ._spl import token_balance as token_balance
from ._spl import transfer_checked as transfer_checked
from ._testmint import TEST_MINT as TEST_MINT
from ._testmint import TEST_MINT_AUTHORITY as TEST_MINT_AUTHORITY
from ._testmint import TEST_MINT_DECIMALS as TEST_MINT_DECIMALS
from ._testmint import TOKEN_AIRDROP as TOKEN_AIRDROP
from ._testmint import ensure_test_mint as ensure_test_mint
from ._testmint import fund_tokens as fund_tokens
from ._watcher import WatchState as WatchState
from ._watcher import close_channel as close_channel
from ._watcher import refund_channel as refund_channel
from ._watcher import run_watcher as run_watcher
from ._watcher import settle_due as settle_due
from ._x402 import CheckedPayment as CheckedPayment
from ._x402 import ExactRequirements as ExactRequirements
from ._x402 import InvalidReason as InvalidReason
from ._x402 import check_exact_payment as check_exact_payment
from ._x402 import cosign_payment as cosign_payment
from ._x402 import payment_key as payment_key

__all__ = [
    "EMPTY_ROOT",
    "MEMO_PROGRAM",
    "Close",
    "Frontier",
    "LandedTransaction",
    "find_close",
    "merkle_path",
    "merkle_root",
    "parse_receipts_memo",
    "receipt_leaf",
    "receipts_memo",
    "state_receipts",
    "verify_path",
    "MAX_RECIPIENTS",
    "MAX_TRANSACTION_BYTES",
    "MIN_PAYOUT",
    "NONCE_ACCOUNT_SIZE",
    "STAKE_ACCOUNT_SIZE",
    "TOKEN_2022",
    "MAX_RPC_BODY",
    "AccountInfo",
    "BlockhashExpired",
    "Channel",
    "ChannelBook",
    "ChannelError",
    "ChannelTerms",
    "EmbeddedLedger",
    "Held",
    "Ledger",
    "LedgerError",
    "ClusterLedger",
    "LocalnetRpc",
    "LedgerUnreachable",
    "Licence",
    "LicenceError",
    "LicenceTerms",
    "LockupInForce",
    "PaymentShort",
    "PubSubHub",
    "PubSubLimits",
    "PubSubSession",
    "RpcLedger",
    "SettlementError",
    "WatchState",
    "StakeMeta",
    "check_channel",
    "check_licence",
    "check_purchase",
    "check_stake",
    "check_state",
    "close_channel",
    "cosign_purchase",
    "countersign",
    "forward_held",
    "held",
    "licence_account",
    "licence_mint",
    "mint_size",
    "new_seed",
    "open_channel_book",
    "open_cluster_ledger",
    "open_embedded_ledger",
    "open_transaction",
    "payable",
    "payable_v1",
    "payment_key",
    "purchase_message",
    "purchase_transaction",
    "read_licence",
    "read_nonce",
    "read_stake",
    "refund_channel",
    "refund_transaction",
    "revoke_transaction",
    "run_watcher",
    "settle_due",
    "sign_state",
    "split",
    "state_message",
    "TOKEN_PROGRAM",
    "MintInfo",
    "TokenAccount",
    "TokenBalance",
    "associated_token_address",
    "create_ata_idempotent",
    "mint_to_checked",
    "read_mint",
    "read_token_account",
    "token_balance",
    "transfer_checked",
    "TEST_MINT",
    "TEST_MINT_AUTHORITY",
    "TEST_MINT_DECIMALS",
    "TOKEN_AIRDROP",
    "ensure_test_mint",
    "fund_tokens",
    "CheckedPayment",
    "ExactRequirements",
    "InvalidReason",
    "PaymentInvalid",
    "check_exact_payment",
    "cosign_payment",
]


if TYPE_CHECKING:
    from ._rpc import RpcLedger as RpcLedger


def __getattr__(name: str) -> Any:
    # The rpc ledger pulls in solana-py (about 90 ms and 30 MB): only when it is used.
    if name == "RpcLedger":
        from ._rpc import RpcLedger

        return RpcLedger
    raise AttributeError(f"module 'settlement' has no attribute {name!r}")
