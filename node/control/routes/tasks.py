"""Routes of tasks: providers, runs and the task log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from .. import _models as m
from .._api import decode_base64, refuse
from ._common import API, errors

router = APIRouter(tags=["tasks"])


@router.get(
    "/v1/providers",
    response_model=m.Providers,
    responses=errors(400),
    summary="Providers whose live agent card serves an agent, cheapest and least loaded first.",
)
async def providers(
    api: API, agent: Annotated[str, Query(max_length=200, description="PUBLISHER/NAME")] = ""
) -> m.Providers:
    return await api.tasks.providers(agent)


@router.post(
    "/v1/tasks/run",
    response_model=m.TaskDone,
    responses=errors(403, 404, 409, 502, body=True),
    summary="Run an agent on the best provider that quotes (or the one given), retrying "
    "on failure; the receipt and output are verified here. Within [spending] limits (a "
    "budget, for a composite agent's sub-calls, counts in full); with an idempotency key "
    "(body or Idempotency-Key header) a retry never runs twice.",
)
async def run(
    api: API,
    body: m.TaskBody,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", max_length=128, pattern=m.IDEMPOTENCY_KEY)
    ] = None,
) -> m.TaskDone:
    stdin = decode_base64(body.input, "input")
    key = body.idempotency_key or idempotency_key
    if body.idempotency_key and idempotency_key and body.idempotency_key != idempotency_key:
        raise refuse(400, "bad_body", "idempotency_key and the Idempotency-Key header differ")
    return await api.tasks.run(
        body.agent, body.version, stdin, body.provider, body.max_price, body.approved, key,
        budget=body.budget,
    )  # fmt: skip


@router.post(
    "/v1/tasks/quote",
    response_model=m.TaskQuote,
    responses=errors(404, 502, body=True),
    summary="The best quote a run would take now (with a budget: what its sub-calls may "
    "cost too), and whether it needs a human's approval ([spending] approve_above).",
)
async def quote(api: API, body: m.QuoteBody) -> m.TaskQuote:
    return await api.tasks.quote(
        body.agent, body.version, body.input_size, body.provider, body.budget
    )


@router.get(
    "/v1/spending",
    response_model=m.Spending,
    responses=errors(),
    summary="What this node's tasks paid today (UTC), what is left, and its [spending] limits.",
)
async def spending(api: API) -> m.Spending:
    return await api.tasks.spending()


@router.get(
    "/v1/usage",
    response_model=m.Usage,
    responses=errors(400),
    summary="What this node spent as a user and earned as a provider over the last days: "
    "calls, tokens in and out and lamports per side and listing (model or agent), per "
    "provider too with by=provider, and totals.",
)
async def usage(
    api: API,
    days: Annotated[int, Query(description="the last this many days, 1-3660 (default 30)")] = 30,
    by: Annotated[
        str, Query(max_length=16, description="agent (default), or provider: per provider too")
    ] = "agent",
) -> m.Usage:
    return await api.tasks.usage(days, by)


@router.get(
    "/v1/tasks",
    response_model=m.Tasks,
    responses=errors(400),
    summary="Tasks this node ran for others or asked others to run, newest first.",
)
async def tasks_list(
    api: API,
    role: Annotated[str | None, Query(max_length=16, description="user or provider")] = None,
    limit: Annotated[int, Query(description="at most this many (default 50)")] = 50,
) -> m.Tasks:
    return await api.tasks.recent(limit, role or None)


@router.get(
    "/v1/tasks/{task_id}",
    response_model=m.Task,
    responses=errors(400, 404),
    summary="One task: each side this node saw, with its receipt and failed attempts.",
)
async def show(api: API, task_id: str) -> m.Task:
    return await api.tasks.show(task_id)


@router.get(
    "/v1/tasks/{task_id}/proof",
    response_model=m.Proof,
    responses=errors(400, 404, 409, 502, 503),
    summary="A paid task's receipt checked against its channel's close on the ledger: the "
    "closing transaction, the receipts root in its memo and the receipt's Merkle path.",
)
async def prove(api: API, task_id: str) -> m.Proof:
    return await api.tasks.prove(task_id)
