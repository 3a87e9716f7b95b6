"""A real inference engine for the tests and the benchmark: llama.cpp's `llama-server`.

Models on mercato are served by an OpenAI-compatible engine the operator runs.
The tests and `scripts/bench.py models` run against a real one: `llama-server`
(built by `scripts/build-llama-server`) serving a tiny llama-architecture GGUF
with random weights that :func:`write_tiny_gguf` writes. Its output is nonsense,
but every byte of the path is real: HTTP, SSE streaming, tokenizer, sampling,
usage and logprobs. Random weights rarely emit EOS, so always bound `max_tokens`.

    from engine import find_llama_server, running_llama_server, write_tiny_gguf

    write_tiny_gguf(tmp / "tiny.gguf")
    async with running_llama_server(tmp / "tiny.gguf") as engine:
        ...  # openai.AsyncOpenAI(base_url=engine.base_url, api_key="none")

:func:`start_llama_server` is the same for code without trio (a session-wide
pytest fixture, say): it returns a running :class:`Engine`; ``Engine.stop()``
ends it. Importing this module has no side effect.
"""

from __future__ import annotations

import os
import platform
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import trio

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
"""The llama-cpp-python release whose vendored llama.cpp scripts/build-llama-server builds."""

START_TIMEOUT_S = 30.0
"""How long the engine may take to load the tiny model and answer /health, before
scaling by MERCATO_TEST_TIME_FACTOR (it takes well under a second on 2 cores)."""

STOP_GRACE_S = 5.0
"""How long the engine has to exit after SIGTERM before it is killed."""

LOG_TAIL_LINES = 40
"""Lines of the engine's log quoted in an error when it does not come up."""

# The tiny model's shape: about 146,000 parameters, ~600 kB in F32.
VOCAB_SIZE = 500
EMBEDDING = 64
LAYERS = 2
HEADS = 4
KV_HEADS = 2  # grouped-query attention, as most current models have
FEED_FORWARD = 128
SEED = 20260
BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"  # a name llama.cpp knows as end of generation
# Letters whose pairs become merged tokens, most frequent in English first.
_MERGE_LETTERS = "etaoinshrdlucm"


class EngineError(RuntimeError):
    """The engine could not be started, or did not come up in time."""


@dataclass
class Engine:
    """A running `llama-server`: an OpenAI-compatible API at ``base_url``.

    ``process`` is a :class:`subprocess.Popen` (from :func:`start_llama_server`)
    or a :class:`trio.Process` (from :func:`running_llama_server`); ``log_path``
    holds the engine's stdout and stderr.
    """

    base_url: str
    """``http://127.0.0.1:PORT/v1``, for an OpenAI client's ``base_url``."""
    model: str
    """The model name the engine serves (its ``--alias``)."""
    port: int
    process: subprocess.Popen[bytes] | trio.Process
    log_path: Path

    @property
    def pid(self) -> int:
        """The engine's process id."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the engine's process has not exited (reaps it if it has)."""
        return self.process.poll() is None

    def kill(self) -> None:
        """Kill the engine abruptly (SIGKILL), as a backend that dies mid-stream.

        Does not wait: ``stop()`` (or leaving :func:`running_llama_server`) reaps it.
        """
        if self.process.poll() is None:
            self.process.kill()

    def stop(self, grace: float = STOP_GRACE_S) -> int:
        """Stop the engine: SIGTERM, then SIGKILL after ``grace`` seconds; its exit code.

        Blocks (polling, for either kind of process): in trio code leave
        :func:`running_llama_server` instead.
        """
        if self.process.poll() is None:
            self.process.terminate()
            deadline = time.monotonic() + grace
            while self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            if self.process.poll() is None:
                self.process.kill()
                while self.process.poll() is None:
                    time.sleep(0.02)
        code = self.process.returncode
        assert code is not None
        return code

    def log(self) -> str:
        """What the engine has written to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the engine's log."""
        return "\n".join(self.log().splitlines()[-lines:])


def time_factor() -> float:
    """The suite's time scale, MERCATO_TEST_TIME_FACTOR (as tests/conftest.py reads it)."""
    return float(os.environ.get("MERCATO_TEST_TIME_FACTOR", "1"))


# --- the tiny model ---------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (its byte-level BPE alphabet)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {byte: chr(char) for byte, char in zip(printable, chars, strict=True)}


def tiny_vocab() -> tuple[list[str], list[str]]:
    """The tiny model's tokens and BPE merges (``"left right"``), ``VOCAB_SIZE`` tokens.

    The 256 byte symbols come first, then one token per merge (" x" for each
    letter, letter pairs, " " + a pair), then the two control tokens, BOS and EOS.
    """
    byte_symbols = list(_bytes_to_unicode().values())
    space = _bytes_to_unicode()[ord(" ")]  # "Ġ"
    merges: list[tuple[str, str]] = [(space, letter) for letter in "abcdefghijklmnopqrstuvwxyz"]
    pairs = [(a, b) for a in _MERGE_LETTERS for b in _MERGE_LETTERS]
    merges += pairs
    budget = VOCAB_SIZE - len(byte_symbols) - len(merges) - 2
    merges += [(space + a, b) for a, b in pairs[:budget]]
    tokens = [*byte_symbols, *(left + right for left, right in merges), BOS_TOKEN, EOS_TOKEN]
    assert len(tokens) == VOCAB_SIZE and len(set(tokens)) == VOCAB_SIZE
    return tokens, [f"{left} {right}" for left, right in merges]


def write_tiny_gguf(
    path: Path,
    *,
    context_length: int = 512,
    name: str = "mercato-tiny-random",
    embedding: int = EMBEDDING,
    layers: int = LAYERS,
    feed_forward: int = FEED_FORWARD,
) -> None:
    """Write a tiny llama-architecture GGUF with random (seeded) weights to ``path``.

    2 layers, width 64, 4 heads (2 for keys and values), a GPT-2 byte-level BPE
    vocabulary of 500 tokens, F32 tensors: about 600 kB. The same bytes every
    time. ``context_length`` is the model's trained context (``llama.context_length``).
    ``embedding``, ``layers`` and ``feed_forward`` make a larger (slower) one: width
    768, 6 layers and 2048 generate about as fast as a real small model on a CPU.
    """
    width_scale = (EMBEDDING / embedding) ** 0.5  # 1 for the tiny model: its bytes stay
    import gguf  # the test extra's; imported here so that importing this module is cheap
    import numpy as np

    tokens, merges = tiny_vocab()
    rng = np.random.default_rng(SEED)
    head_dim = embedding // HEADS

    def weight(rows: int, cols: int) -> np.ndarray:
        # numpy's (rows, cols) is ggml's ne = [cols, rows]: rows outputs of cols inputs.
        return (rng.standard_normal((rows, cols)) * 0.2 * width_scale).astype(np.float32)

    def ones() -> np.ndarray:
        return np.ones(embedding, dtype=np.float32)

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_description("random weights, for tests: its output is nonsense")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(context_length)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(VOCAB_SIZE)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.NORMAL] * (VOCAB_SIZE - 2) + [gguf.TokenType.CONTROL] * 2
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index(BOS_TOKEN))
    writer.add_eos_token_id(tokens.index(EOS_TOKEN))
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    writer.add_tensor("token_embd.weight", weight(VOCAB_SIZE, embedding))
    for layer in range(layers):
        block = f"blk.{layer}"
        writer.add_tensor(f"{block}.attn_norm.weight", ones())
        writer.add_tensor(f"{block}.attn_q.weight", weight(HEADS * head_dim, embedding))
        writer.add_tensor(f"{block}.attn_k.weight", weight(KV_HEADS * head_dim, embedding))
        writer.add_tensor(f"{block}.attn_v.weight", weight(KV_HEADS * head_dim, embedding))
        writer.add_tensor(f"{block}.attn_output.weight", weight(embedding, HEADS * head_dim))
        writer.add_tensor(f"{block}.ffn_norm.weight", ones())
        writer.add_tensor(f"{block}.ffn_gate.weight", weight(feed_forward, embedding))
        writer.add_tensor(f"{block}.ffn_up.weight", weight(feed_forward, embedding))
        writer.add_tensor(f"{block}.ffn_down.weight", weight(embedding, feed_forward))
    writer.add_tensor("output_norm.weight", ones())
    writer.add_tensor("output.weight", weight(VOCAB_SIZE, embedding))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# --- the engine's binary ----------------------------------------------------------


def engine_cache() -> Path:
    """Where scripts/build-llama-server keeps its builds: $MERCATO_ENGINE_CACHE or
    ~/.cache/mercato/engine."""
    configured = os.environ.get("MERCATO_ENGINE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "mercato" / "engine"


def find_llama_server() -> Path | None:
    """The `llama-server` to run: $MERCATO_LLAMA_SERVER if set, else the one
    scripts/build-llama-server installs into the cache if it is there, else None."""
    configured = os.environ.get("MERCATO_LLAMA_SERVER")
    if configured:
        return Path(configured)
    built = (
        engine_cache()
        / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}-{platform.machine()}"
        / "llama-server"
    )
    return built if os.access(built, os.X_OK) else None


def _require_binary(binary: Path | None) -> Path:
    found = binary or find_llama_server()
    if found is None:
        raise EngineError(
            "llama-server is not built: run scripts/build-llama-server "
            "(or set MERCATO_LLAMA_SERVER to a llama-server binary)"
        )
    if not os.access(found, os.X_OK):
        raise EngineError(f"{found} is not an executable llama-server")
    return found


# --- starting and stopping --------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def llama_server_command(
    binary: Path,
    model_path: Path,
    *,
    port: int,
    alias: str,
    threads: int,
    parallel: int,
    context_length: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that serves ``model_path`` on 127.0.0.1:``port``.

    ``parallel`` slots of ``context_length`` tokens each (the KV cache is split
    evenly between slots). One thread is the default on purpose: two threads on
    two busy cores drop to ~20 tokens/s, one gives over a thousand.
    """
    return [
        str(binary),
        "--model",
        str(model_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        alias,
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--parallel",
        str(parallel),
        "--ctx-size",
        str(parallel * context_length),
        "--no-webui",  # built without one anyway (-DLLAMA_USE_PREBUILT_UI=OFF)
        *extra_args,
    ]


def _log_path(model_path: Path, port: int) -> Path:
    return model_path.parent / f"llama-server-{port}.log"


def _health_status(port: int) -> int | None:
    """The HTTP status of GET /health (503 while the model loads), None if no answer."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            status: int = answer.status
            return status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, OSError):
        return None


def _exited_error(engine: Engine) -> EngineError:
    return EngineError(
        f"llama-server exited with code {engine.process.returncode} before it answered"
        f" (log {engine.log_path}):\n{engine.log_tail()}"
    )


def _timeout_error(engine: Engine, timeout: float) -> EngineError:
    return EngineError(
        f"llama-server did not answer GET /health with 200 within {timeout:.0f} s"
        f" (log {engine.log_path}):\n{engine.log_tail()}"
    )


def _launch(
    model_path: Path,
    binary: Path | None,
    alias: str,
    threads: int,
    parallel: int,
    context_length: int,
    extra_args: Sequence[str],
) -> tuple[list[str], int, Path]:
    """The command line, port and log file of an engine about to start."""
    found = _require_binary(binary)
    port = free_port()
    command = llama_server_command(
        found,
        model_path,
        port=port,
        alias=alias,
        threads=threads,
        parallel=parallel,
        context_length=context_length,
        extra_args=extra_args,
    )
    return command, port, _log_path(model_path, port)


def start_llama_server(
    model_path: Path,
    *,
    alias: str = "tiny",
    threads: int = 1,
    parallel: int = 2,
    context_length: int = 512,
    binary: Path | None = None,
    start_timeout: float | None = None,
    extra_args: Sequence[str] = (),
) -> Engine:
    """Start `llama-server` on ``model_path`` and wait until it serves; the caller
    calls ``stop()``. Without trio: a subprocess.Popen, blocking waits.

    ``start_timeout`` defaults to START_TIMEOUT_S times MERCATO_TEST_TIME_FACTOR; the
    error says why the engine did not come up (the tail of its log).
    """
    command, port, log_path = _launch(
        model_path, binary, alias, threads, parallel, context_length, extra_args
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    engine = Engine(f"http://127.0.0.1:{port}/v1", alias, port, process, log_path)
    limit = START_TIMEOUT_S * time_factor() if start_timeout is None else start_timeout
    deadline = time.monotonic() + limit
    try:
        while _health_status(port) != 200:
            if process.poll() is not None:
                raise _exited_error(engine)
            if time.monotonic() > deadline:
                raise _timeout_error(engine, limit)
            time.sleep(0.05)
    except BaseException:
        engine.stop(grace=1.0)
        raise
    return engine


async def _stop_async(engine: Engine, grace: float) -> None:
    process = engine.process
    assert isinstance(process, trio.Process)
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(grace):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@asynccontextmanager
async def running_llama_server(
    model_path: Path,
    *,
    alias: str = "tiny",
    threads: int = 1,
    parallel: int = 2,
    context_length: int = 512,
    binary: Path | None = None,
    start_timeout: float | None = None,
    extra_args: Sequence[str] = (),
    grace: float = STOP_GRACE_S,
) -> AsyncIterator[Engine]:
    """Run `llama-server` on ``model_path`` for the block (trio): yields a serving
    :class:`Engine`; on exit, SIGTERM, then SIGKILL after ``grace`` seconds.

    Arguments as for :func:`start_llama_server`. ``engine.kill()`` inside the
    block kills it abruptly (a backend that dies mid-stream); the exit reaps it.
    """
    command, port, log_path = _launch(
        model_path, binary, alias, threads, parallel, context_length, extra_args
    )
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    engine = Engine(f"http://127.0.0.1:{port}/v1", alias, port, process, log_path)
    limit = START_TIMEOUT_S * time_factor() if start_timeout is None else start_timeout
    try:
        with trio.move_on_after(limit) as waiting:
            while await trio.to_thread.run_sync(_health_status, port) != 200:
                if process.poll() is not None:
                    raise _exited_error(engine)
                await trio.sleep(0.05)
        if waiting.cancelled_caught:
            raise _timeout_error(engine, limit)
        yield engine
    finally:
        with trio.CancelScope(shield=True):
            await _stop_async(engine, grace)
