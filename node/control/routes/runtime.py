"""Routes of the sandbox."""

from __future__ import annotations

from fastapi import APIRouter

from .. import _models as m
from .._api import decode_base64
from ._common import API, errors

router = APIRouter(tags=["runtime"])


@router.post(
    "/v1/runtime/run",
    response_model=m.RunOutcome,
    responses=errors(503, body=True),
    summary="Run a WebAssembly module once in the sandbox (a worker process).",
)
async def run(api: API, body: m.RunBody) -> m.RunOutcome:
    wasm, stdin = decode_base64(body.wasm, "wasm"), decode_base64(body.input, "input")
    return await api.runtime.run(wasm, stdin, body.limits)
