"""Routes of the wallet and payment channels."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .. import _models as m
from ._common import API, errors

router = APIRouter(tags=["money"])


@router.get(
    "/v1/wallet",
    response_model=m.Wallet,
    responses=errors(502, 503),
    summary="This node's wallet: its Solana address, balance and ledger.",
)
async def wallet(api: API) -> m.Wallet:
    return await api.money.wallet()


@router.post(
    "/v1/wallet/airdrop",
    response_model=m.Airdropped,
    responses=errors(502, 503, body=True),
    summary="Lamports from the ledger's faucet (embedded and localnet).",
)
async def airdrop(api: API, body: m.AirdropBody) -> m.Airdropped:
    return await api.money.airdrop(body.lamports)


@router.get(
    "/v1/channels",
    response_model=m.Channels,
    responses=errors(),
    summary="Payment channels this node pays on or is paid on.",
)
async def channels(api: API) -> m.Channels:
    return api.money.channels()


@router.post(
    "/v1/channels",
    status_code=201,
    response_model=m.Channel,
    responses=errors(404, 409, 502, 503, body=True),
    summary="Open a channel to a peer by hand (payee: else its agent card's wallet).",
)
async def channel_open(api: API, body: m.OpenBody) -> m.Channel:
    return await api.money.open(body.peer, body.deposit_lamports, body.duration_s, body.payee)


@router.get(
    "/v1/channels/{stake}",
    response_model=m.Channel,
    responses=errors(404),
    summary="One channel by its stake account: terms, amounts owed and used, status.",
)
async def channel(api: API, stake: str) -> m.Channel:
    return api.money.channel(stake)


@router.post(
    "/v1/channels/{stake}/close",
    response_model=m.Settled,
    responses=errors(404, 409, 502, 503),
    summary="Close a channel this node is paid on, now, with the latest state (the payee).",
)
async def close(api: API, stake: str) -> m.Settled:
    return await api.money.close(stake)


@router.post(
    "/v1/channels/{stake}/refund",
    response_model=m.Settled,
    responses=errors(404, 409, 502, 503),
    summary="Take back what a channel this node paid on holds, after its lockup (the payer).",
)
async def refund(api: API, stake: str) -> m.Settled:
    return await api.money.refund(stake)


@router.get(
    "/v1/earnings",
    response_model=m.Earnings,
    responses=errors(400),
    summary="What this node earned serving others over a period: per listing (tasks, "
    "revenue, royalties) and per channel it is paid on (what closed ones paid it).",
)
async def earnings(
    api: API,
    days: Annotated[float | None, Query(description="the last this many days (default 30)")] = None,
    since: Annotated[
        float | None, Query(description="or since this moment, in unix seconds")
    ] = None,
) -> m.Earnings:
    return await api.earnings.earnings(days, since)
