"""models: what two mercato nodes add to a chat completion, next to the engine alone.

A real `llama-server` (scripts/engine.py: one thread, the tiny random-weight
GGUF) and, in this process on one trio loop and one embedded ledger, two nodes:
a provider that serves the model from that engine (a model listing priced per
token, published by a third key, the creator, with a royalty) and a user. The
client, in a separate process so that it shares neither the nodes' event loop
nor their GIL, makes the same chat completion (fixed messages, ``seed``) two
ways, one after the other, alternating which goes first:

- direct: ``POST /v1/chat/completions`` at the engine;
- through mercato: the same at the user's node (``/v1``, its API token), which
  sends it to the provider over the p2p exchange; the provider asks its engine
  (always streamed, with usage and logprobs, so the user can count the tokens);
  the chunks come back as they come; at the end the user checks the signed
  receipt and pays exactly its price through the payment channel, and both
  sides log the call. Every call is paid: payment is on the path.

Warm-up calls come first (the first opens the payment channel). Then:

- ``overhead_p50_ms``: p50 over ``CALLS`` pairs of (through mercato - direct)
  wall time of a call not streamed, ``SHORT_TOKENS`` output tokens (the tiny
  model rarely emits EOS, so every call makes them all); ``direct_p50_ms`` and
  ``mercato_p50_ms`` are each path's own p50;
- ``first_token_overhead_ms``: the same for the time from the request to the
  first streamed chunk with content (``stream: true``), ``CALLS`` pairs; the
  stream is read to its end;
- ``tokens_per_s_ratio``: streamed output tokens (the answer's ``usage``) per
  second from the request to the last content chunk, through mercato over
  direct (p50 of each), ``LONG_CALLS`` pairs of ``LONG_TOKENS`` tokens;
  ``decode_tokens_per_s_ratio`` is the same from the first content chunk to the
  last (the stream's pace once it flows).

``same_output`` says whether both paths got the same number of output tokens
in every pair (the same work for the engine); ``lamports_paid`` and
``paid_calls`` are what the user's channel paid and the calls it paid for.
The client is httpx (sync), one keep-alive connection per path, except that
llama-server closes its connection after every streamed answer (without
saying so: a request sent on it at once finds it closed), so the direct
streamed calls ask ``Connection: close`` and the next direct call connects
anew, as the provider's own client does. Both nodes share one process, one
core and one trio loop: what each adds per chunk adds up here, where two
machines would work on a stream's chunks side by side. Without a built
`llama-server` (scripts/build-llama-server) this exits with code 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio

if TYPE_CHECKING:  # mercato and engine are imported where used: the client needs neither
    from engine import Engine

    from mercato.node import Node

HERE = Path(__file__).resolve().parent
CALLS = 100  # pairs (direct, mercato) for each latency figure
LONG_CALLS = 20  # pairs for the throughput figure
WARM_CALLS = 5  # pairs of each kind before measuring
SHORT_TOKENS = 32
LONG_TOKENS = 256
SEED = 1
SMALL_CALLS = 6  # pairs of the small model's streams
SMALL_TOKENS = 128
SMALL_CONTEXT = 1024
SMALL_SHAPE = {"embedding": 768, "layers": 6, "feed_forward": 2048}
MESSAGES = [{"role": "user", "content": "Say something."}]
INPUT_PRICE = 1_000  # lamports per 1,000 tokens, as tests/models
OUTPUT_PRICE = 50_000
ROYALTY_BPS = 1000
MODEL = {
    "kind": "model",
    "title": "Tiny chat",
    "summary": "Random weights: nonsense, fast.",
    "royalty_bps": ROYALTY_BPS,
    "model": {
        "family": "llama",
        "parameters": 150_000,
        "quantisation": "F32",
        "context_length": 512,
        "input_price": INPUT_PRICE,
        "output_price": OUTPUT_PRICE,
    },
}
CLIENT = (
    "httpx (sync) in a separate process, one keep-alive connection per path (a new one "
    "after each direct stream: llama-server closes it); the two nodes share one process "
    "and one trio loop"
)
OFFER_TIMEOUT_S = 60.0
CLIENT_TIMEOUT_S = 900.0


# -- the network --------------------------------------------------------------------------


@dataclasses.dataclass
class _Net:
    provider: Node
    user: Node
    model: str
    small: str


@asynccontextmanager
async def _model_network(root: Path, engine: Engine, small: Engine) -> AsyncIterator[_Net]:
    """A provider serving the tiny model (published by a third key, the creator) from
    ``engine`` and the small one from ``small``, and a user, on one embedded ledger;
    once the user sees both offers. tests/models/test_models.py's ``model_network``,
    with the default intervals."""
    from mercato.node import Config, DataDir, KeyStore, Node, ServedModel, init_data_dir
    from mercato.settlement import open_embedded_ledger

    config = (
        Config()
        .replace("api", port=0)
        .replace("p2p", listen=("/ip4/127.0.0.1/tcp/0",), mdns=False, target_peers=0)
    )
    dirs = [DataDir(root / name) for name in ("provider", "user")]
    for datadir in dirs:
        await trio.to_thread.run_sync(init_data_dir, datadir)
    async with (
        open_embedded_ledger(root / "ledger.db") as ledger,
        trio.open_nursery() as nursery,
    ):
        creator = KeyStore(dirs[0]).create_account("creator").address
        ref, small_ref = f"{creator}/tiny-chat", f"{creator}/small-chat"
        entries = (
            ServedModel(
                name="tiny", listing=ref, backend=engine.base_url, engine_model=engine.model
            ),
            ServedModel(
                name="small", listing=small_ref, backend=small.base_url,
                engine_model=small.model,
            ),
        )  # fmt: skip
        provider = Node(dirs[0], dataclasses.replace(config, models=entries), ledger=ledger)
        await nursery.start(provider.run)
        await provider.registry.publish("creator", {**MODEL, "name": "tiny-chat"})
        spec = {**MODEL["model"], "context_length": SMALL_CONTEXT}  # type: ignore[dict-item]
        await provider.registry.publish("creator", {**MODEL, "name": "small-chat", "model": spec})
        user = Node(dirs[1], config, ledger=ledger)
        await nursery.start(user.run)
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        # The provider offers the model once its next health check sees the listing
        # (nothing to wait on: poll, as tests/models does).
        with trio.fail_after(OFFER_TIMEOUT_S):
            for _ in iter(int, 1):
                offered = {m["id"] for m in (await user.api.models.models())["data"]}
                if {ref, small_ref} <= offered:
                    break
                await trio.sleep(0.05)
        try:
            yield _Net(provider, user, ref, small_ref)
        finally:
            for node in (provider, user):
                node.request_stop()


# -- the client (its own process) ---------------------------------------------------------


def _body(model: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": MESSAGES,
        "max_tokens": max_tokens,
        "seed": SEED,
    }
    if stream:
        body.update(stream=True, stream_options={"include_usage": True})
    return body


@dataclasses.dataclass
class _Whole:
    seconds: float
    tokens: int


@dataclasses.dataclass
class _Streamed:
    first_s: float  # from the request to the first chunk with content
    last_s: float  # ... to the last chunk with content
    tokens: int  # the answer's usage.completion_tokens


def _whole(client: httpx.Client, model: str, max_tokens: int) -> _Whole:
    started = time.perf_counter()
    answer = client.post("/chat/completions", json=_body(model, max_tokens, False))
    took = time.perf_counter() - started
    if answer.status_code != 200:
        raise RuntimeError(f"{client.base_url}: {answer.status_code} {answer.text[:500]}")
    return _Whole(took, int(answer.json()["usage"]["completion_tokens"]))


def _streamed(
    client: httpx.Client, model: str, max_tokens: int, last_on_connection: bool
) -> _Streamed:
    first = last = 0.0
    tokens = 0
    body = _body(model, max_tokens, True)
    headers = {"Connection": "close"} if last_on_connection else {}
    started = time.perf_counter()
    with client.stream("POST", "/chat/completions", json=body, headers=headers) as answer:
        if answer.status_code != 200:
            raise RuntimeError(f"{client.base_url}: {answer.status_code} {answer.read()[:500]!r}")
        for line in answer.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            at = time.perf_counter() - started
            chunk = json.loads(line[5:])
            if "error" in chunk:
                raise RuntimeError(f"{client.base_url}: the stream broke off: {chunk}")
            if any((c.get("delta") or {}).get("content") for c in chunk.get("choices") or []):
                first = first or at
                last = at
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
    if not first or not tokens:
        raise RuntimeError(f"{client.base_url}: a stream without content or usage")
    return _Streamed(first, last, tokens)


def _pairs(n: int, call: Callable[[str], Any]) -> list[tuple[Any, Any]]:
    """``n`` pairs (direct, mercato) of ``call(path)``, alternating which goes first."""
    out = []
    for i in range(n):
        order = ("direct", "mercato") if i % 2 == 0 else ("mercato", "direct")
        got = {}
        for path in order:
            try:
                got[path] = call(path)
            except Exception as exc:
                raise RuntimeError(f"a call {path}, pair {i} of {n}: {exc!r}") from exc
        out.append((got["direct"], got["mercato"]))
    return out


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def client_main(config: dict[str, Any]) -> dict[str, Any]:
    """Every call of the benchmark against ``config``'s engine and user node; the figures."""
    settings: dict[str, Any] = {"timeout": 120, "trust_env": False}  # loopback: no proxy
    with (
        httpx.Client(base_url=config["engine"], **settings) as direct,
        httpx.Client(
            base_url=config["node"],
            headers={"Authorization": f"Bearer {config['token']}"},
            **settings,
        ) as through,
    ):
        clients = {
            "direct": (direct, config["engine_model"]),
            "mercato": (through, config["model"]),
        }

        def whole(path: str, max_tokens: int = SHORT_TOKENS) -> _Whole:
            return _whole(*clients[path], max_tokens)

        def streamed(path: str, max_tokens: int = SHORT_TOKENS) -> _Streamed:
            # llama-server closes its connection after every streamed answer, without a
            # `Connection: close`: a request sent on it at once finds it closed.
            return _streamed(*clients[path], max_tokens, last_on_connection=path == "direct")

        def long(path: str) -> _Streamed:
            return streamed(path, LONG_TOKENS)

        # Warm: the connections, the channel opened by the first paid call, caches.
        _pairs(WARM_CALLS, whole)
        _pairs(WARM_CALLS, streamed)
        _pairs(2, long)
        wholes = _pairs(CALLS, whole)
        firsts = _pairs(CALLS, streamed)
        longs = _pairs(LONG_CALLS, long)
        # The small model: about as fast as a real small model on a CPU.
        clients["direct"] = (direct.__class__(base_url=config["small_engine"], **settings),
                             config["small_engine_model"])  # fmt: skip
        clients["mercato"] = (through, config["small"])
        with clients["direct"][0]:
            _pairs(1, lambda path: streamed(path, SMALL_TOKENS))
            smalls = _pairs(SMALL_CALLS, lambda path: streamed(path, SMALL_TOKENS))

    def rate(s: _Streamed) -> float:
        return s.tokens / s.last_s

    def decode_rate(s: _Streamed) -> float:
        return (s.tokens - 1) / max(s.last_s - s.first_s, 1e-6)

    p50 = statistics.median
    direct_rate, mercato_rate = p50(rate(d) for d, _ in longs), p50(rate(m) for _, m in longs)
    direct_decode = p50(decode_rate(d) for d, _ in longs)
    mercato_decode = p50(decode_rate(m) for _, m in longs)
    pairs: list[tuple[Any, Any]] = [*wholes, *firsts, *longs]
    return {
        "overhead_p50_ms": _ms(p50(m.seconds - d.seconds for d, m in wholes)),
        "direct_p50_ms": _ms(p50(d.seconds for d, _ in wholes)),
        "mercato_p50_ms": _ms(p50(m.seconds for _, m in wholes)),
        "first_token_overhead_ms": _ms(p50(m.first_s - d.first_s for d, m in firsts)),
        "direct_first_token_p50_ms": _ms(p50(d.first_s for d, _ in firsts)),
        "mercato_first_token_p50_ms": _ms(p50(m.first_s for _, m in firsts)),
        "tokens_per_s_ratio": round(mercato_rate / direct_rate, 3),
        "direct_tokens_per_s": round(direct_rate),
        "mercato_tokens_per_s": round(mercato_rate),
        "decode_tokens_per_s_ratio": round(mercato_decode / direct_decode, 3),
        "same_output": all(d.tokens == m.tokens for d, m in pairs),
        "small_model_tokens_per_s_ratio": round(
            p50(rate(m) for _, m in smalls) / p50(rate(d) for d, _ in smalls), 3
        ),
        "small_model_direct_tokens_per_s": round(p50(rate(d) for d, _ in smalls)),
    }


def _client_process() -> None:
    """``python -m benchmarks.models client``: the config as JSON on stdin, the figures
    as one JSON line on stdout."""
    print(json.dumps(client_main(json.loads(sys.stdin.read()))), flush=True)


# -- the run ------------------------------------------------------------------------------


async def _run(root: Path, binary: Path) -> dict[str, Any]:
    from engine import running_llama_server, write_tiny_gguf

    model_path, small_path = root / "tiny.gguf", root / "small.gguf"
    await trio.to_thread.run_sync(write_tiny_gguf, model_path)
    await trio.to_thread.run_sync(
        lambda: write_tiny_gguf(small_path, context_length=SMALL_CONTEXT, **SMALL_SHAPE)
    )
    async with (
        running_llama_server(model_path, binary=binary) as engine,
        running_llama_server(
            small_path, binary=binary, alias="small", parallel=1, context_length=SMALL_CONTEXT
        ) as small,
        _model_network(root, engine, small) as net,
    ):
        token = net.user.datadir.token_file.read_text().strip()
        config = {
            "engine": engine.base_url,
            "engine_model": engine.model,
            "node": net.user.api_url + "/v1",
            "token": token,
            "model": net.model,
            "small_engine": small.base_url,
            "small_engine_model": small.model,
            "small": net.small,
        }
        with trio.fail_after(CLIENT_TIMEOUT_S):
            done = await trio.run_process(
                [sys.executable, "-m", "benchmarks.models", "client"],
                cwd=HERE.parent,
                stdin=json.dumps(config).encode(),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"the client failed:\n{done.stderr.decode()[-3000:]}")
        figures: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
        (channel,) = net.user.settlement.channels()
        calls = await net.user.tasks.tasklog.recent(10_000, "user")
        paid = [r for r in calls if r.agent in (net.model, net.small) and r.price > 0]
    return {
        **figures,
        "calls": CALLS,
        "long_calls": LONG_CALLS,
        "warm_calls": WARM_CALLS,
        "short_tokens": SHORT_TOKENS,
        "long_tokens": LONG_TOKENS,
        "paid_calls": len(paid),
        "lamports_paid": channel["paid"],
        "small_calls": SMALL_CALLS,
        "small_tokens": SMALL_TOKENS,
        "engine": "llama-server, 1 thread, the tiny random-weight GGUF (scripts/engine.py); "
        "small_model_*: a larger random GGUF (width 768, 6 layers, 159 MB), about as fast "
        "as a real small model on a CPU",
        "client": CLIENT,
        "targets": {
            "overhead_p50_ms": 15,
            "first_token_overhead_ms": 20,
            "tokens_per_s_ratio": 0.95,
        },
    }


def run() -> dict[str, Any]:
    if str(HERE.parent) not in sys.path:  # scripts/, for engine.py (bench.py puts it there)
        sys.path.insert(0, str(HERE.parent))
    from engine import find_llama_server

    binary = find_llama_server()
    if binary is None or not os.access(binary, os.X_OK):
        why = "is not built" if binary is None else f"is not an executable at {binary}"
        print(
            f"models: llama-server {why}: run scripts/build-llama-server "
            "(or set MERCATO_LLAMA_SERVER to a llama-server binary)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    root = Path(tempfile.mkdtemp(prefix="mercato-models-"))
    try:
        return trio.run(_run, root, binary)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["client"]:
        _client_process()
    else:
        sys.exit(f"usage: {sys.executable} -m benchmarks.models client  (the benchmark's client)")
