"""The daemon runs builds in its worker pool and stays responsive whatever they do."""

import base64
import threading
import time
from pathlib import Path

import pytest
from wasmtime import wat2wasm

from mercato.node import ControlClient, ControlError, DataDir

MODULES = Path(__file__).parents[1] / "runtime" / "modules"
EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def wat(name: str) -> bytes:
    return wat2wasm((MODULES / f"{name}.wat").read_text())


def test_the_control_api_answers_while_two_runaway_modules_spin(
    datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)
    client = ControlClient(datadir, timeout=30)
    results: list[dict] = []

    def runaway() -> None:
        body = {"wasm": b64(wat("loop")), "limits": {"fuel": 10**13, "timeout_s": 3}}
        results.append(client.request("POST", "/v1/runtime/run", body))

    threads = [threading.Thread(target=runaway) for _ in range(2)]
    for thread in threads:
        thread.start()
    latencies = []
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:  # both runs spin for 3 s
        started = time.perf_counter()
        client.health()
        latencies.append(time.perf_counter() - started)
        time.sleep(0.05)
    for thread in threads:
        thread.join(timeout=30)
    assert [r["outcome"] for r in results] == ["timeout", "timeout"]
    assert len(latencies) > 20 and max(latencies) < 0.1, sorted(latencies)[-3:]


def test_a_build_runs_through_the_api_and_bad_ones_are_refused(
    datadir: DataDir, start_daemon
) -> None:
    start_daemon(datadir)
    client = ControlClient(datadir)
    wordcount = (EXAMPLES / "wordcount" / "wordcount.wasm").read_bytes()
    answer = client.request(
        "POST", "/v1/runtime/run", {"wasm": b64(wordcount), "input": b64(b"a b c")}
    )
    assert answer["outcome"] == "ok"
    assert base64.b64decode(answer["output"]).startswith(b'{"bytes": 5, "lines": 0, "words": 3')
    assert answer["usage"]["fuel"] > 0
    assert 'mercato_runtime_runs_total{outcome="ok"} 1.0' in client.metrics()
    for body, code in [
        ({"wasm": b64(b"not wasm")}, "invalid_module"),
        ({"wasm": "%%%"}, "bad_body"),
        ({"wasm": b64(wordcount), "limits": {"memory_mb": 100_000}}, "bad_limits"),
        ({"wasm": b64(wordcount), "limits": {"timeout_s": 600}}, "bad_limits"),
        (
            {"wasm": b64(wordcount), "input": b64(b"xx"), "limits": {"max_input_bytes": 1}},
            "input_too_large",
        ),
    ]:
        with pytest.raises(ControlError) as err:
            client.request("POST", "/v1/runtime/run", body)
        assert err.value.status == 400 and err.value.code == code, body
