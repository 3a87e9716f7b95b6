"""The node's settlement service: its wallet, its ledger, its channels, its watcher.

It opens the ledger named in ``[settlement]`` (the embedded one: the Solana
runtime in this process, journaled in the data dir), the channel book, and runs
the watcher that closes channels this node is paid on before their lockup ends
and refunds the ones it paid on after. The wallet is the ``[settlement]
account`` key: its public key is the Solana address. On the embedded ledger an
empty wallet is credited ``faucet_lamports`` at start, so a new node can pay
at once; that money exists on this node's ledger only.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from solders.keypair import Keypair as SolanaKeypair

from settlement import (
    ChannelBook,
    EmbeddedLedger,
    open_channel_book,
    open_embedded_ledger,
    run_watcher,
)

from ._config import SettlementSection
from ._keys import KeyStore
from ._paths import DataDir

log = logging.getLogger("mercato.settlement")


class SettlementService:
    def __init__(
        self,
        config: SettlementSection,
        wallet: SolanaKeypair,
        ledger: EmbeddedLedger,
        book: ChannelBook,
    ) -> None:
        self.config = config
        self.wallet = wallet
        self.ledger = ledger
        self.book = book

    @property
    def address(self) -> str:
        return str(self.wallet.pubkey())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fund an empty wallet (embedded ledger), then watch channels until cancelled."""
        if self.config.faucet_lamports and not await self.ledger.balance(self.wallet.pubkey()):
            await self.ledger.airdrop(self.wallet.pubkey(), self.config.faucet_lamports)
            log.info(
                "the embedded ledger credited the wallet",
                extra={"address": self.address, "lamports": self.config.faucet_lamports},
            )
        task_status.started()
        await run_watcher(
            self.book,
            self.ledger,
            {self.wallet.pubkey(): self.wallet},
            self.config.close_margin_s,
            self.config.watch_interval_s,
        )

    async def wallet_info(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "ledger": self.ledger.name,
            "balance": await self.ledger.balance(self.wallet.pubkey()),
            "now": await self.ledger.now(),
        }

    def channels(self) -> list[dict[str, Any]]:
        return [
            {
                **c.terms.to_wire(),
                "role": c.role,
                "peer": c.peer,
                "status": c.status,
                "paid": c.paid,
                "left": c.left,
                "owed": {str(k): v for k, v in c.owed.items()},
            }
            for c in sorted(self.book.channels.values(), key=lambda c: c.terms.expires)
        ]


@asynccontextmanager
async def open_settlement(
    config: SettlementSection, datadir: DataDir, keys: KeyStore
) -> AsyncIterator[SettlementService]:
    """The settlement service of a node, its files closed on exit."""
    account = await trio.to_thread.run_sync(keys.account, config.account)
    wallet = SolanaKeypair.from_seed(account.seed)
    async with (
        open_embedded_ledger(datadir.ledger_file) as ledger,
        open_channel_book(datadir.channels_file) as book,
    ):
        yield SettlementService(config, wallet, ledger, book)
