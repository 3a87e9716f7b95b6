"""The real inference engine the model tests run against: llama.cpp's `llama-server`
serving a tiny GGUF with random weights (scripts/engine.py), reached with the
official `openai` client. Without a built `llama-server` these tests skip and say
why, except under CI=true, where they fail: CI must run them."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from engine import Engine, running_llama_server

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say something."}
]


def client(engine: Engine) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.base_url, api_key="none", max_retries=0, timeout=30)


def test_the_engine_lists_the_tiny_model(llama_engine: Engine) -> None:
    with client(llama_engine) as api:
        assert [model.id for model in api.models.list()] == [llama_engine.model]


def test_a_completion_returns_text_and_usage(llama_engine: Engine) -> None:
    with client(llama_engine) as api:
        answer = api.chat.completions.create(
            model=llama_engine.model, messages=MESSAGES, max_tokens=16, seed=1
        )
    assert answer.model == llama_engine.model
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    # Random weights rarely emit EOS; when they do, generation stops early.
    assert choice.finish_reason in ("length", "stop")
    assert 1 <= answer.usage.completion_tokens <= 16
    if choice.finish_reason == "length":
        assert answer.usage.completion_tokens == 16


def test_a_streamed_completion_ends_with_usage(llama_engine: Engine) -> None:
    with client(llama_engine) as api:
        chunks = list(
            api.chat.completions.create(
                model=llama_engine.model,
                messages=MESSAGES,
                max_tokens=16,
                seed=2,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    # The last chunk carries the usage and no choice.
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and 1 <= last.usage.completion_tokens <= 16
    assert all(c.usage is None for c in chunks[:-1])


async def test_an_engine_killed_mid_stream_breaks_the_stream(
    tiny_model: Path, llama_server_binary: Path
) -> None:
    """running_llama_server (trio), and Engine.kill() as a backend that dies."""
    received = 0
    # Room for 4,000 tokens, about half a second: the engine dies long before the end.
    async with running_llama_server(
        tiny_model, binary=llama_server_binary, parallel=1, context_length=4096
    ) as engine:
        api = openai.AsyncOpenAI(base_url=engine.base_url, api_key="none", max_retries=0)
        async with api:
            stream = await api.chat.completions.create(
                model=engine.model, messages=MESSAGES, max_tokens=4000, stream=True
            )
            with pytest.raises(openai.APIError):
                async for _chunk in stream:
                    received += 1
                    if received == 5:
                        engine.kill()
    assert engine.process.returncode == -9
    assert 5 <= received < 4000
