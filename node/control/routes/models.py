"""Routes of models, in OpenAI's own format: any OpenAI client works with
``base_url = <node>/v1`` and the node's API token as its key."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .._chat import ChatFailed
from ._common import API

router = APIRouter(tags=["models"])

_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string", "description": "an id from GET /v1/models"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "stream": {"type": "boolean"},
                        "stream_options": {"type": "object"},
                        "provider": {
                            "type": "string",
                            "description": "mercato: ask this provider (a peer id) only",
                        },
                    },
                }
            }
        },
    }
}


@router.get(
    "/v1/models",
    summary="OpenAI's model list: the models live providers on the network serve now.",
)
async def models(api: API) -> dict[str, Any]:
    return await api.models.models()


@router.get(
    "/v1/models/served",
    summary="The [models] engines this node serves: health, prices, speed and load.",
)
async def served(api: API) -> list[dict[str, Any]]:
    return api.models.served()


@router.post(
    "/v1/chat/completions",
    summary="OpenAI's chat completion, streamed (server-sent events) or not, on the best "
    "provider of the model, paid per token through a channel within [spending] limits. "
    "Errors are OpenAI's error objects.",
    openapi_extra=_CHAT_BODY,
    response_model=None,
)
async def chat(api: API, request: Request) -> Any:
    try:
        call, chat = await api.models.start(await request.body())
        if chat.stream:
            return StreamingResponse(
                api.models.stream(call, chat),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        return await api.models.complete(call, chat)
    except ChatFailed as exc:
        headers = {} if exc.retry else {"x-should-retry": "false"}
        return JSONResponse(exc.body, status_code=exc.status, headers=headers)
