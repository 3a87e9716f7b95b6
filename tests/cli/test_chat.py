"""`mercato chat` and `ControlClient.chat_stream` against a FAKE of the node's
``POST /v1/chat/completions``.

The fake (`FakeChatRoute`) is a tiny HTTP server in the test that answers with
canned server-sent events in OpenAI's wire format, the way the real route is
specified; it stands in only because that route is being built at the same
time. The end-to-end test through a real daemon comes with the real route.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from mercato.cli import main
from mercato.node import ControlClient, ControlError, DataDir

PUB = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB"
INSTANCE = "fake-instance"
TOKEN = "fake-token"
USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
NOTE = {"provider": "12D3KooWFakeProvider", "lamports": 42}


def chunk(model: str, content: str | None = None, finish: str | None = None, **extra: Any):
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
        "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }  # fmt: skip


class FakeChatRoute(BaseHTTPRequestHandler):
    """A FAKE of the control API for `mercato chat`: ``GET /v1/health`` and a
    canned ``POST /v1/chat/completions``, chosen by the model's name."""

    protocol_version = "HTTP/1.1"
    requests: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    gate: ClassVar[threading.Event] = threading.Event()

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._json(200, {"status": "ok", "version": "0", "instance": INSTANCE})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeChatRoute.requests.append((self.headers["Authorization"], body))
        model = body["model"]
        name = model.rpartition("/")[2]
        if name == "unknown":
            error = {
                "message": f"no model {model} is served on the network",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            self._json(404, {"error": error})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")  # as Hypercorn streams
        self.end_headers()
        self._event(": a comment, as a keep-alive")
        self._event("data: " + json.dumps(chunk(model, "")))  # the role-only first delta
        if name == "broken":
            self._event("data: " + json.dumps(chunk(model, "partial")))
            error = {"message": "the provider went away", "type": "server_error", "code": "gone"}
            self._event("data: " + json.dumps({"error": error}))
        elif name == "cut":
            self._event("data: " + json.dumps(chunk(model, "Hel")))
            self._event("data: " + json.dumps(chunk(model, finish="length")))
        else:
            self._event("data: " + json.dumps(chunk(model, "Hel")))
            if name == "gated":
                FakeChatRoute.gate.wait(10)
            self._event("data: " + json.dumps(chunk(model, "lo")))
            self._event("data: " + json.dumps(chunk(model, " there")))
            last = chunk(model, finish="stop", usage=USAGE, mercato=NOTE)
            self._event("data: " + json.dumps(last))
        self._event("data: [DONE]")
        self._write(b"")  # the last chunk of the chunked body

    def _event(self, text: str) -> None:
        self._write(f"{text}\n\n".encode())

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        except OSError:  # the client hung up after an error event: nothing to tell it
            pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def datadir(tmp_path: Path) -> Iterator[DataDir]:
    """A data dir whose api.json and api.token lead to the fake route."""
    FakeChatRoute.requests, FakeChatRoute.gate = [], threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeChatRoute)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = DataDir(tmp_path / "data")
    data.root.mkdir()
    address = {"host": "127.0.0.1", "port": server.server_address[1], "instance": INSTANCE}
    data.api_file.write_text(json.dumps(address))
    data.token_file.write_text(TOKEN)
    try:
        yield data
    finally:
        FakeChatRoute.gate.set()
        server.shutdown()
        server.server_close()


def chat(datadir: DataDir, *args: str, stdin: str | None = None):
    return CliRunner().invoke(main, ["chat", *args, "--data-dir", str(datadir.root)], input=stdin)


def test_one_question_prints_the_answer_then_its_tokens_and_price(datadir: DataDir) -> None:
    out = chat(datadir, f"{PUB}/llama", "-m", "hi")
    assert out.exit_code == 0, out.output
    assert out.stdout == "Hello there\n"
    assert out.stderr == "[9 tokens in, 3 out, 42 lamports, provider 12D3KooWFakeProvider]\n"
    ((auth, body),) = FakeChatRoute.requests
    assert auth == f"Bearer {TOKEN}"
    assert body == {
        "model": f"{PUB}/llama",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 256,
    }


def test_piped_stdin_is_one_question_with_the_system_message(datadir: DataDir) -> None:
    text = "line one\nline two\n"
    options = ("--system", "Be brief", "--max-tokens", "5")
    out = chat(datadir, "cut", *options, stdin=text)  # a name alone: the route finds it
    assert out.exit_code == 0, out.output
    assert out.stdout == "Hel\n"
    assert out.stderr == "[cut at --max-tokens 5]\n"  # no usage came: no token counts
    ((_, body),) = FakeChatRoute.requests
    assert body["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": text},
    ]
    assert body["max_tokens"] == 5


def test_json_prints_the_whole_answer(datadir: DataDir) -> None:
    out = chat(datadir, f"{PUB}/llama", "-m", "hi", "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == {
        "model": f"{PUB}/llama",
        "text": "Hello there",
        "finish_reason": "stop",
        "usage": USAGE,
        "mercato": NOTE,
    }
    assert out.stderr == ""


def test_a_conversation_keeps_its_history_until_an_empty_line(
    datadir: DataDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mercato.cli._chat._interactive", lambda: True)
    out = chat(datadir, f"{PUB}/llama", "--system", "Be kind", stdin="first\nsecond\n\nunread\n")
    assert out.exit_code == 0, out.output
    assert out.stdout == "> Hello there\n> Hello there\n> "
    assert out.stderr.count("[9 tokens in, 3 out") == 2
    first, second = (body["messages"] for _, body in FakeChatRoute.requests)
    assert first == [
        {"role": "system", "content": "Be kind"},
        {"role": "user", "content": "first"},
    ]
    assert second == [
        *first,
        {"role": "assistant", "content": "Hello there"},
        {"role": "user", "content": "second"},
    ]
    ended = chat(datadir, f"{PUB}/llama", stdin="")  # end of input ends it too
    assert ended.exit_code == 0 and ended.stdout == "> \n"
    assert chat(datadir, f"{PUB}/llama", "--json").exit_code == 2  # --json is one question


def test_a_refused_question_in_a_conversation_is_said_and_taken_back(
    datadir: DataDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mercato.cli._chat._interactive", lambda: True)
    out = chat(datadir, f"{PUB}/broken", stdin="first\nsecond\n")
    assert out.exit_code == 0, out.output
    assert out.stderr.count("error: the provider went away") == 2
    first, second = (body["messages"] for _, body in FakeChatRoute.requests)
    assert first == [{"role": "user", "content": "first"}]
    assert second == [{"role": "user", "content": "second"}]  # the first was taken back


def test_errors_print_the_apis_message_and_exit_1_usage_errors_2(datadir: DataDir) -> None:
    unknown = chat(datadir, f"{PUB}/unknown", "-m", "hi")
    assert unknown.exit_code == 1
    assert unknown.stderr == f"error: no model {PUB}/unknown is served on the network\n"
    midway = chat(datadir, f"{PUB}/broken", "-m", "hi")
    assert midway.exit_code == 1
    assert midway.stdout == "partial\n"  # what came before the error, on its own line
    assert midway.stderr == "error: the provider went away\n"
    assert chat(datadir, "a/b/c", "-m", "hi").exit_code == 2
    assert chat(datadir, "/llama", "-m", "hi").exit_code == 2
    assert chat(datadir, f"{PUB}/llama", stdin="  \n").exit_code == 2  # nothing to ask
    assert chat(datadir, f"{PUB}/llama", "-m", "hi", "--max-tokens", "0").exit_code == 2


def test_the_client_yields_each_chunk_as_it_arrives(datadir: DataDir) -> None:
    client = ControlClient(datadir, timeout=20)
    chunks = client.chat_stream({"model": f"{PUB}/gated", "messages": []})
    seen = []
    for received in chunks:
        content = received["choices"][0]["delta"].get("content")
        seen.append((content, FakeChatRoute.gate.is_set()))
        if content == "Hel":
            FakeChatRoute.gate.set()  # the server sends the rest only now
    assert seen[:3] == [("", False), ("Hel", False), ("lo", True)]
    assert seen[-1] == (None, True)
    with pytest.raises(ControlError, match="no model") as refused:
        list(client.chat_stream({"model": f"{PUB}/unknown", "messages": []}))
    assert (refused.value.status, refused.value.code) == (404, "model_not_found")
