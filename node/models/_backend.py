"""A provider's inference engine, reached over its OpenAI-compatible HTTP API.

mercato starts no engine: ``[models]`` names one that runs next to the node
(llama.cpp's ``llama-server``, vLLM, Ollama). `Engine.healthy` asks its
``/models``; `Engine.stream` posts a chat completion and yields each chunk of
its server-sent events as it arrives.

Errors: `EngineRefused` when the engine answers with an error status before
streaming (its OpenAI error message and code kept: a prompt over the context
is ``context_length_exceeded``), `EngineDown` when it cannot be reached or
breaks off. Cancelling a stream closes the engine's connection, which stops
its generation.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any, cast

import httpx

from .._config import ServedModel
from ._messages import MAX_CHUNK, ModelError

HEALTH_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
MAX_ERROR_BODY = 16 * 1024
CONTEXT_WORDS = ("context", "exceed")


class EngineDown(ModelError):
    """The engine cannot be reached, or broke off its answer."""


class EngineRefused(ModelError):
    """The engine answered a request with an error status."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Engine:
    """One ``[models]`` entry's engine. Close it with `aclose`."""

    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.base = served.backend.rstrip("/")
        self.model = served.engine_model or served.listing.partition("/")[2]
        """The engine's own name for the model."""
        headers = {}
        if served.api_key_env and (key := os.environ.get(served.api_key_env)):
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(connect=CONNECT_TIMEOUT_S, read=None, write=30.0, pool=None),
            limits=httpx.Limits(max_connections=served.concurrency + 2),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def healthy(self) -> bool:
        """Whether the engine answers ``GET /models`` with the model named in the config."""
        try:
            answer = await self._client.get(f"{self.base}/models", timeout=HEALTH_TIMEOUT_S)
            if answer.status_code != 200:
                return False
            names = [m.get("id") for m in answer.json().get("data") or [] if isinstance(m, dict)]
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        return not names or self.model in names

    async def stream(self, body: dict[str, Any]) -> AsyncGenerator[bytes, None]:
        """Post ``body`` to ``/chat/completions`` and yield each event's data (the
        chunk's JSON, as the engine sent it) until ``[DONE]``."""
        try:
            async with self._client.stream(
                "POST", f"{self.base}/chat/completions", json=body
            ) as answer:
                if answer.status_code != 200:
                    raise await _refusal(answer)
                done = False
                # Read to the end, even past [DONE]: httpx's generators left half-read
                # are only closed by the garbage collector.
                async with aclosing(cast(AsyncGenerator[str, None], answer.aiter_lines())) as lines:
                    async for line in lines:
                        if done or not line.startswith("data:"):
                            continue  # comments, event names, blank separators
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            continue
                        if len(data) > MAX_CHUNK // 4 and len(data.encode()) > MAX_CHUNK:
                            raise EngineDown(f"the engine sent a chunk over {MAX_CHUNK} bytes")
                        yield data.encode()
        except httpx.HTTPError as exc:
            raise EngineDown(f"the engine at {self.base} failed: {exc!r}") from exc
        if not done:
            raise EngineDown("the engine ended its answer without [DONE]")


async def _refusal(answer: httpx.Response) -> EngineRefused:
    raw = b""
    async for piece in answer.aiter_bytes():
        raw += piece
        if len(raw) > MAX_ERROR_BODY:
            break
    message, code = f"the engine answered {answer.status_code}", ""
    try:
        error = json.loads(raw).get("error") or {}
        message = str(error.get("message") or message)[:400]
        code = str(error.get("code") or error.get("type") or "")
    except (ValueError, AttributeError):
        pass
    lowered = f"{message} {code}".lower()
    if answer.status_code == 400 and all(w in lowered for w in CONTEXT_WORDS):
        code = "context_length_exceeded"
    return EngineRefused(answer.status_code, message, code)
