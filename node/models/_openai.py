"""OpenAI's chat-completions wire format, as far as this node takes and gives it.

`parse_chat` checks a request body (untrusted: a client's, or a peer's) and
keeps what a provider's engine is given: the messages and the sampling
parameters listed in FORWARDED. `engine_body` is what the provider sends its
engine: always streamed, with usage and with each token listed in
``logprobs`` (so the user's node can count what it received). The rest
shapes what the user's client gets: chunks renamed to the model asked for,
the one-piece answer of a call that was not streamed, and errors in OpenAI's
form (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ._messages import TEMPLATE_TOKENS, TEMPLATE_TOKENS_PER_MESSAGE, BadModelRequest

MAX_MESSAGES = 4096
ROLES = frozenset(("system", "developer", "user", "assistant", "tool"))
FORWARDED: dict[str, type | tuple[type, ...]] = {
    "temperature": float,
    "top_p": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "seed": int,
    "stop": (str, list),
    "top_logprobs": int,
}
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "audio", "modalities")
DEFAULT_MAX_TOKENS = 256
MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat request: what the engine gets, and what the user asked of the answer."""

    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False

    def prompt_bytes(self) -> int:
        """UTF-8 bytes of the messages' text (a byte-level tokenizer's most tokens)."""
        return sum(len(_text(m["content"]).encode()) for m in self.messages)

    def input_bound(self, context_length: int) -> int:
        """The most input tokens this prompt can be, whatever the tokenizer and the
        chat template (within TEMPLATE_TOKENS_PER_MESSAGE a message)."""
        allowance = TEMPLATE_TOKENS + TEMPLATE_TOKENS_PER_MESSAGE * len(self.messages)
        return min(context_length, self.prompt_bytes() + allowance)

    def wire(self, max_tokens: int) -> bytes:
        """The body a provider receives: canonical JSON of the messages, the
        parameters kept and the output cap."""
        body = {"messages": self.messages, "max_tokens": max_tokens, **self.params}
        if self.logprobs:
            body["logprobs"] = True
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def _fail(message: str, param: str = "", code: str = "invalid_request") -> BadModelRequest:
    return BadModelRequest(message, code=code, param=param)


def _message(i: int, m: Any) -> dict[str, Any]:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise _fail(f"{where} must be an object with a role and content", where)
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise _fail(f"{where}.role must be one of {', '.join(sorted(ROLES))}", f"{where}.role")
    if isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _fail(
                    f"{where}.content[{j}]: only text parts are supported",
                    f"{where}.content",
                )
            if not isinstance(part.get("text"), str):
                raise _fail(f"{where}.content[{j}].text must be text", f"{where}.content")
        content = [{"type": "text", "text": p["text"]} for p in content]
    elif not isinstance(content, str):
        raise _fail(f"{where}.content must be text (or a list of text parts)", f"{where}.content")
    out: dict[str, Any] = {"role": role, "content": content}
    if isinstance(m.get("name"), str) and len(m["name"]) <= 64:
        out["name"] = m["name"]
    return out


def _whole(body: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{key} must be a whole number from {low} to {high}", key)
    return value


def parse_chat(body: Any, *, need_model: bool = True) -> ChatRequest:
    """A `ChatRequest` from a decoded JSON body; BadModelRequest naming the
    parameter that is wrong."""
    if not isinstance(body, dict):
        raise _fail("the body must be a JSON object")
    model = body.get("model", "")
    if need_model and (not isinstance(model, str) or not 1 <= len(model) <= 200):
        raise _fail("model is required: a model's id from GET /v1/models", "model")
    for key in UNSUPPORTED:
        if body.get(key) not in (None, [], {}):
            raise _fail(f"{key} is not supported by models on this network yet", key)
    if _whole(body, "n", 1, 1) not in (None, 1):
        raise _fail("n must be 1", "n")
    messages = body.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise _fail(f"messages must be a list of 1 to {MAX_MESSAGES} messages", "messages")
    checked = [_message(i, m) for i, m in enumerate(messages)]
    max_tokens = _whole(body, "max_completion_tokens", 1, 10**7)
    if max_tokens is None:
        max_tokens = _whole(body, "max_tokens", 1, 10**7)
    params = {}
    for key, kind in FORWARDED.items():
        value = body.get(key)
        if value is None:
            continue
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is float:
            ok = type(value) in (int, float) and math.isfinite(value) and abs(value) <= 1e6
        if key == "top_logprobs":
            ok = ok and 0 <= value <= MAX_TOP_LOGPROBS
        if key == "stop" and isinstance(value, list):
            ok = len(value) <= 4 and all(isinstance(s, str) and len(s) <= 256 for s in value)
        if not ok or (isinstance(value, str) and len(value) > 256):
            raise _fail(f"{key} has the wrong type or size", key)
        params[key] = value
    stream = body.get("stream", False)
    options = body.get("stream_options") or {}
    logprobs = body.get("logprobs", False)
    if type(stream) is not bool or not isinstance(options, dict) or type(logprobs) is not bool:
        raise _fail("stream and logprobs are true or false; stream_options an object")
    return ChatRequest(
        model=model if isinstance(model, str) else "",
        messages=checked,
        max_tokens=max_tokens,
        params=params,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        logprobs=logprobs,
    )


def engine_body(chat: ChatRequest, max_tokens: int, engine_model: str) -> dict[str, Any]:
    """What a provider sends its engine: the checked messages and parameters only
    (an engine takes options a user must not set, like llama.cpp's ``n_predict``),
    always streamed, with usage and each token listed."""
    return {
        "model": engine_model,
        "messages": chat.messages,
        "max_tokens": max_tokens,
        **chat.params,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logprobs": True,
        # llama.cpp lists no token at 0 alternatives, and 20 of them when left out.
        "top_logprobs": max(int(chat.params.get("top_logprobs", 1)), 1),
    }


def loads_strict(data: bytes | str) -> Any:
    """JSON without NaN or Infinity (an engine's encoder refuses them)."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    return json.loads(data, parse_constant=refuse)


def error_body(message: str, type_: str, code: str, param: str = "") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param or None, "code": code}}


@dataclass
class Answer:
    """What the user's node gathers of a streamed call, to answer in one piece."""

    call_id: str
    model: str
    created: int = field(default_factory=lambda: int(time.time()))
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    logprobs: list[Any] = field(default_factory=list)

    def add(self, chunk: dict[str, Any]) -> None:
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                self.text.append(delta["content"])
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            content = (choice.get("logprobs") or {}).get("content")
            if isinstance(content, list):
                self.logprobs.extend(content)

    def completion(self, usage: dict[str, Any], with_logprobs: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": "".join(self.text)},
            "finish_reason": self.finish_reason or "stop",
            "logprobs": {"content": self.logprobs} if with_logprobs else None,
        }
        return {
            "id": self.call_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        }


def usage_of(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": input_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": input_tokens + output_tokens,
    }


def client_chunk(
    chunk: dict[str, Any], call_id: str, model: str, with_logprobs: bool
) -> dict[str, Any] | None:
    """An engine's chunk as the user's client gets it (None: nothing to pass on,
    like the engine's own usage chunk: the node sends its own, from the receipt)."""
    choices = chunk.get("choices")
    if not choices:
        return None
    out = dict(chunk, id=call_id, model=model, object="chat.completion.chunk")
    out.pop("usage", None)
    out.pop("timings", None)
    if not with_logprobs:
        out["choices"] = [{k: v for k, v in c.items() if k != "logprobs"} for c in choices]
    return out


def checked_chunk(data: bytes) -> dict[str, Any]:
    """A provider's chunk, if it has the shape of one (an object whose ``choices``
    are objects with object ``delta`` and ``logprobs``); ValueError otherwise."""
    try:
        chunk = loads_strict(data)
    except RecursionError as exc:
        raise ValueError("a chunk nests too deep") from exc
    choices = chunk.get("choices", []) if isinstance(chunk, dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ValueError("a chunk is not an object with a list of choices")
    for choice in choices:
        for key in ("delta", "logprobs"):
            if choice.get(key) is not None and not isinstance(choice[key], dict):
                raise ValueError(f"a chunk's {key} is not an object")
        content = (choice.get("delta") or {}).get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("a chunk's content is not text")
    return chunk


def tokens_listed(chunk: dict[str, Any]) -> int:
    """How many tokens a chunk lists in its logprobs (one entry a token)."""
    n = 0
    for choice in chunk.get("choices") or []:
        content = (
            (choice.get("logprobs") or {}).get("content") if isinstance(choice, dict) else None
        )
        if isinstance(content, list):
            n += len(content)
    return n


def content_bytes(chunk: dict[str, Any]) -> int:
    n = 0
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            n += len(delta["content"].encode())
    return n
