"""Routes of licences and subscriptions: buying, listing, refunding, and sales."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from .. import _models as m
from ._common import API, errors

router = APIRouter(tags=["commerce"])

Mint = Annotated[str, Path(description="the licence token's mint (base58)")]


@router.post(
    "/v1/licences",
    status_code=201,
    response_model=m.Licence,
    responses=errors(409, 502, 503, body=True),
    summary="Buy a plan (licence or subscription) of a listing from its creator's node, "
    "which must be online; answers once the licence is on the ledger.",
)
async def buy(api: API, body: m.BuyBody) -> m.Licence:
    return await api.commerce.buy(body.agent, body.plan, body.approved)


@router.get(
    "/v1/licences",
    response_model=m.Licences,
    responses=errors(),
    summary="The licences and subscriptions this node's wallet bought, newest first.",
)
async def licences(api: API) -> m.Licences:
    return await api.commerce.licences()


@router.post(
    "/v1/licences/{mint}/refund",
    response_model=m.Licence,
    responses=errors(400, 404, 409, 502, 503),
    summary="Ask the creator's node to refund a licence within its plan's refund window.",
)
async def refund(api: API, mint: Mint) -> m.Licence:
    return await api.commerce.refund(mint)


@router.get(
    "/v1/sales",
    response_model=m.Sales,
    responses=errors(),
    summary="The licences this node's creators sold, newest first, and totals per plan.",
)
async def sales(api: API) -> m.Sales:
    return await api.commerce.sales()
