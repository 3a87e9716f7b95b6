"""`mercato run --budget`: the most a whole run may cost, a composite agent's
sub-calls included; the run's cost and sub-calls on stderr (stdout stays the
agent's output), in --json, and in `tasks show`. On a fake client: no daemon."""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from mercato.cli import main
from mercato.node import ControlError

AGENT = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/summarise"
SUBCALLS = [
    {"op": "call", "target": "pub/wordcount", "status": 0, "status_name": "ok", "error": "",
     "cost": 300, "provider": "12D3KooWsub", "receipt_signed": "AAE="},
    {"op": "infer", "target": "pub/llama", "status": -2, "status_name": "over_budget",
     "error": "pub/llama may cost 900 lamports; the budget has 200 left", "cost": 0,
     "provider": "", "receipt_signed": ""},
]  # fmt: skip
DONE = {
    "task": "ab" * 16, "output": base64.b64encode(b"the summary").decode(),
    "provider": "12D3KooWtop", "receipt": {"outcome": "ok", "price": 1000}, "verified": "receipt",
    "cost": 1300, "subcalls": SUBCALLS, "attempts": [], "licence": "", "upgrade": None,
}  # fmt: skip
QUOTE = {"provider": "12D3KooWtop", "version": "1.0.0", "price": 1000, "subcalls_max": 4000,
         "most": 5000, "needs_approval": True}  # fmt: skip


class FakeClient:
    """A fake `ControlClient` that records each call with its keyword arguments."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = []
    answers: ClassVar[dict[str, list[Any]]] = {}

    def __init__(self, datadir: Any, timeout: float = 10.0) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            FakeClient.calls.append((name, args, kwargs))
            answer = FakeClient.answers[name].pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return method


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.calls, FakeClient.answers = [], {}
    monkeypatch.setattr("mercato.cli._run.ControlClient", FakeClient)
    return FakeClient


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_budget_is_documented_and_a_bad_one_is_a_usage_error(fake: type[FakeClient]) -> None:
    helped = invoke("run", "--help")
    assert helped.exit_code == 0 and "--budget LAMPORTS" in helped.output
    assert "composite agent's sub-calls included" in " ".join(helped.output.split())
    for bad in ("-1", "lots", str(10**15 + 1)):
        out = invoke("run", AGENT, "--budget", bad)
        assert out.exit_code == 2 and "--budget" in out.stderr, (bad, out.output)
    assert fake.calls == []  # nothing asked of the node


def test_a_run_with_a_budget_prints_its_cost_and_sub_calls_on_stderr(
    fake: type[FakeClient],
) -> None:
    fake.answers["run_task"] = [DONE]
    out = invoke("run", AGENT, "--budget", "5000")
    assert out.exit_code == 0, out.output
    ((name, args, kwargs),) = fake.calls
    assert name == "run_task" and args[0] == AGENT and kwargs["budget"] == 5000
    assert out.stdout == "the summary"
    lines = out.stderr.splitlines()
    assert lines[0] == "cost 1300 lamports: price 1000, sub-calls 300"
    assert lines[1].split() == ["call", "pub/wordcount", "ok", "300", "lamports"]
    assert lines[2].split()[:5] == ["infer", "pub/llama", "over_budget", "0", "lamports"]
    assert lines[2].endswith("(pub/llama may cost 900 lamports; the budget has 200 left)")

    fake.answers["run_task"] = [DONE]
    shown = json.loads(invoke("run", AGENT, "--budget", "5000", "--json").stdout)
    assert (shown["cost"], shown["subcalls"]) == (1300, SUBCALLS)
    assert shown["output"] == "the summary"


def test_a_run_without_a_budget_asks_as_before_and_a_plain_one_prints_nothing_more(
    fake: type[FakeClient],
) -> None:
    fake.answers["run_task"] = [{**DONE, "cost": 1000, "subcalls": []}]
    out = invoke("run", AGENT)
    assert out.exit_code == 0 and out.stdout == "the summary" and out.stderr == ""
    ((_, _, kwargs),) = fake.calls
    assert "budget" not in kwargs


def test_approval_quotes_with_the_budget_and_asks_about_the_most(
    fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    needed = ControlError("approval needed", status=403, code="approval_needed")
    fake.answers.update(run_task=[needed, DONE], quote=[QUOTE])
    out = invoke("run", AGENT, "--budget", "5000", "--yes")
    assert out.exit_code == 0, out.output
    assert [(n, kw.get("budget")) for n, _, kw in fake.calls] == [
        ("run_task", 5000), ("quote", 5000), ("run_task", 5000),
    ]  # fmt: skip
    assert fake.calls[2][2]["approved"] and fake.calls[2][1][3:5] == ("12D3KooWtop", 1000)

    asked: list[str] = []

    class Terminal:
        def __init__(self, *args: Any) -> None:
            pass

        def __enter__(self) -> Terminal:
            return self

        def __exit__(self, *args: Any) -> None:
            pass

        def write(self, text: str) -> None:
            asked.append(text)

        def flush(self) -> None:
            pass

        def readline(self) -> str:
            return "n\n"

    monkeypatch.setattr("mercato.cli._run.open", Terminal, raising=False)  # /dev/tty
    fake.answers.update(run_task=[needed], quote=[QUOTE])
    out = invoke("run", AGENT, "--budget", "5000")
    assert out.exit_code == 1 and "not confirmed" in out.stderr
    assert asked == [
        f"Run {AGENT}@1.0.0 on 12D3KooWtop for 1000 lamports (the whole run within 5000, "
        "sub-calls included)? [y/N] "
    ]


def test_tasks_show_lists_the_sub_calls(fake: type[FakeClient]) -> None:
    side = {"id": "ab" * 16, "role": "user", "receipt": {"subcalls_cost": 300},
            "subcalls": SUBCALLS}  # fmt: skip
    fake.answers["task"] = [{"task": "ab" * 16, "sides": [side]}]
    out = invoke("tasks", "show", "ab" * 16)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["sides"][0]["subcalls"] == SUBCALLS
