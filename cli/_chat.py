"""``mercato chat``: a conversation with a model served on the network, from the terminal.

It sends OpenAI's chat request to the node's ``/v1/chat/completions`` with
``stream: true`` and prints each piece of the answer as it arrives.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient, ControlError, DaemonNotRunning

from ._common import data_dir_option, print_json, resolve

CHAT_TIMEOUT_S = 300.0  # the longest wait for the model's next piece of the answer
PROMPT = "> "


@click.command("chat")
@data_dir_option
@click.argument("model", metavar="MODEL")
@click.option("-m", "--message", metavar="TEXT", help="Ask this once, print the answer, exit.")
@click.option("--system", metavar="TEXT", help="A system message that starts the conversation.")
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="The longest answer, in tokens.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One question only: print the whole answer as JSON (model, text, usage).",
)
def chat(
    data_dir: Path | None,
    model: str,
    message: str | None,
    system: str | None,
    max_tokens: int,
    as_json: bool,
) -> None:
    """Talk to a model served on the network, through this node.

    MODEL is the model's listing, PUBLISHER/NAME (or NAME alone when one
    publisher has a model of that name). With -m, ask once; with stdin piped,
    all of it is one question; on a terminal, a conversation: type after the
    "> " prompt, and an empty line or end of input (Ctrl-D) ends it. The answer
    is printed as it arrives; then, on stderr, the tokens it took and what it
    paid, when the node says.

    \b
    Example:
      mercato chat 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/llama -m "Name three primes"
      cat notes.txt | mercato chat 8Co4.../llama --system "Summarize in one line"
      mercato chat 8Co4.../llama --max-tokens 512
    """
    if model.count("/") > 1 or not all(model.split("/")):
        raise click.BadParameter(f"{model!r}: expected PUBLISHER/NAME or NAME", param_hint="MODEL")
    client = ControlClient(resolve(data_dir), timeout=CHAT_TIMEOUT_S)
    messages = [{"role": "system", "content": system}] if system else []
    if message is None and _interactive():
        if as_json:
            raise click.UsageError("--json answers one question: give it with -m TEXT or on stdin")
        _converse(client, model, messages, max_tokens)
        return
    text = message if message is not None else sys.stdin.read()
    if not text.strip():
        raise click.UsageError("nothing to ask: give a question with -m TEXT or on stdin")
    messages.append({"role": "user", "content": text})
    answer = _answer(client, model, messages, max_tokens, echo=not as_json)
    if as_json:
        print_json(answer)
    else:
        _tell_usage(answer, max_tokens)


def _interactive() -> bool:
    return sys.stdin.isatty()


def _request(model: str, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},  # the counts and price, at the end
        "max_tokens": max_tokens,
    }


def _answer(
    client: ControlClient,
    model: str,
    messages: list[dict[str, str]],
    max_tokens: int,
    *,
    echo: bool,
) -> dict[str, Any]:
    """Ask, printing each piece of the answer as it comes if ``echo``; the whole
    answer: model, text, finish_reason, usage and the node's ``mercato`` note
    (provider, lamports), as the chunks gave them."""
    chunks = client.chat_stream(_request(model, messages, max_tokens))
    answer: dict[str, Any] = {"model": model, "text": "", "finish_reason": None, "usage": None}
    try:
        _gather(chunks, answer, echo)
    finally:
        if echo and answer["text"] and not answer["text"].endswith("\n"):
            click.echo()  # the answer, or what came of it before an error, ends its line
    return answer


def _gather(chunks: Iterable[dict[str, Any]], answer: dict[str, Any], echo: bool) -> None:
    for chunk in chunks:
        answer["model"] = chunk.get("model") or answer["model"]
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") or ""
            answer["text"] += piece
            if echo and piece:
                click.echo(piece, nl=False)  # flushed: the pieces show as they come
            answer["finish_reason"] = choice.get("finish_reason") or answer["finish_reason"]
        if chunk.get("usage"):
            answer["usage"] = chunk["usage"]
        if chunk.get("mercato"):
            answer["mercato"] = chunk["mercato"]


def _tell_usage(answer: dict[str, Any], max_tokens: int) -> None:
    """On stderr, one line: the tokens the answer took, what it paid and to whom."""
    parts = []
    if usage := answer.get("usage"):
        parts.append(
            f"{usage.get('prompt_tokens', '?')} tokens in, "
            f"{usage.get('completion_tokens', '?')} out"
        )
    note = answer.get("mercato") or {}
    if "lamports" in note:
        parts.append(f"{note['lamports']} lamports")
    if note.get("provider"):
        parts.append(f"provider {note['provider']}")
    if answer.get("finish_reason") == "length":
        parts.append(f"cut at --max-tokens {max_tokens}")
    if parts:
        click.echo(f"[{', '.join(parts)}]", err=True)


def _converse(
    client: ControlClient, model: str, messages: list[dict[str, str]], max_tokens: int
) -> None:
    """Ask, answer, and again, the whole conversation sent each time, until an
    empty line or end of input. A refused question is said and taken back."""
    with contextlib.suppress(ImportError):  # not on every platform
        import readline  # noqa: F401  (line editing and history for input())
    while True:
        try:
            text = input(PROMPT)
        except EOFError:
            click.echo()
            return
        if not text.strip():
            return
        messages.append({"role": "user", "content": text})
        try:
            answer = _answer(client, model, messages, max_tokens, echo=True)
        except DaemonNotRunning:
            raise
        except ControlError as exc:
            messages.pop()
            click.echo(f"error: {exc}", err=True)
            continue
        messages.append({"role": "assistant", "content": answer["text"]})
        _tell_usage(answer, max_tokens)
