"""Routes of tasks: providers, runs and the task log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from .. import _models as m
from .._api import decode_base64
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
    return api.tasks.providers(agent)


@router.post(
    "/v1/tasks/run",
    response_model=m.TaskDone,
    responses=errors(404, 409, 502, body=True),
    summary="Run an agent on the best provider that quotes (or the one given), retrying "
    "on failure; the receipt and output are verified here.",
)
async def run(api: API, body: m.TaskBody) -> m.TaskDone:
    stdin = decode_base64(body.input, "input")
    return await api.tasks.run(body.agent, body.version, stdin, body.provider, body.max_price)


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
