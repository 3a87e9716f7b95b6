"""`mercato usage` and the tokens in `mercato tasks ls`: their text and JSON, on
the fake client of test_commerce.py (fixed answers of the control API's shapes)."""

import json
from typing import Any

import pytest
from click.testing import CliRunner

from mercato.cli import main
from mercato.cli._format import short_ref

from .test_commerce import PUBLISHER, FakeClient

MODEL = f"{PUBLISHER}/llama-3-8b-instruct"  # long: shown whole, never cut
COUNTS = ("calls", "calls_ok", "input_tokens", "output_tokens", "lamports")


def counts(*values: int) -> dict[str, int]:
    return dict(zip(COUNTS, values, strict=True))


USAGE = {
    "days": 30,
    "since": 1_700_000_000.0,
    "usage": [
        {"role": "user", "agent": MODEL, **counts(3, 2, 1200, 3400, 4500)},
        {"role": "user", "agent": "pub/wordcount", **counts(1, 1, 0, 0, 70)},
        {"role": "provider", "agent": MODEL, **counts(2, 2, 10, 20, 900)},
    ],
    "totals": {"user": counts(4, 3, 1200, 3400, 4570), "provider": counts(2, 2, 10, 20, 900)},
}


def task(**fields: Any) -> dict[str, Any]:
    """A task side as `GET /v1/tasks` lists it."""
    return {
        "id": "ab" * 16, "role": "user", "agent": MODEL, "version": "1.0.0",
        "provider": "12D3KooWProviderPeerIdThatIsLong", "user": "me", "status": "ok",
        "price": 300, "created": 1_700_000_000.0, "wall_ms": 120, "verified": "",
        "error": "", "attempts": [], "input_tokens": 0, "output_tokens": 0, **fields,
    }  # fmt: skip


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.calls, FakeClient.answers = [], {}
    for module in ("_usage", "_run"):
        monkeypatch.setattr(f"mercato.cli.{module}.ControlClient", FakeClient)
    return FakeClient


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_usage_prints_a_table_per_side_and_listing_then_totals(fake: type[FakeClient]) -> None:
    fake.answers["usage"] = USAGE
    out = invoke("usage")
    assert out.exit_code == 0, out.output
    assert fake.calls == [("usage", (30,))]
    header, *rows = out.output.splitlines()
    assert [h.strip() for h in header.split("  ") if h.strip()] == [
        "ROLE", "MODEL/AGENT", "CALLS", "IN TOKENS", "OUT TOKENS", "LAMPORTS"
    ]  # fmt: skip
    assert [r.split() for r in rows] == [
        ["user", MODEL, "3", "1200", "3400", "4500"],
        ["user", "pub/wordcount", "1", "0", "0", "70"],
        ["provider", MODEL, "2", "10", "20", "900"],
        ["user", "total", "spent", "4", "1200", "3400", "4570"],
        ["provider", "total", "earned", "2", "10", "20", "900"],
    ]
    assert header.index("LAMPORTS") == rows[0].index("4500")  # the columns line up
    assert header.index("IN TOKENS") == rows[0].index("1200")
    assert json.loads(invoke("usage", "--json").output) == USAGE
    invoke("usage", "--days", "7")
    assert fake.calls[-1] == ("usage", (7,))
    assert invoke("usage", "--days", "0").exit_code == 2
    fake.answers["usage"] = {**USAGE, "usage": []}
    assert invoke("usage").output == "no calls in the last 30 days\n"


PROVIDER = "12D3KooWProviderPeerIdThatIsLong"
BY_PROVIDER = {
    **USAGE,
    "usage": [
        {"role": "user", "agent": MODEL, "provider": PROVIDER, **counts(2, 2, 1000, 3000, 4000)},
        {"role": "user", "agent": MODEL, "provider": "12D3KooWOth", **counts(1, 0, 200, 400, 500)},
        {"role": "user", "agent": "pub/wordcount", "provider": "", **counts(1, 0, 0, 0, 0)},
        {"role": "provider", "agent": MODEL, "provider": "me", **counts(2, 2, 10, 20, 900)},
    ],
}


def test_usage_by_provider_adds_the_providers_short_id(fake: type[FakeClient]) -> None:
    fake.answers["usage"] = BY_PROVIDER
    out = invoke("usage", "--by", "provider", "--days", "7")
    assert out.exit_code == 0, out.output
    assert fake.calls == [("usage", (7, "provider"))]
    header, *rows = out.output.splitlines()
    assert header.split()[:4] == ["ROLE", "MODEL/AGENT", "PROVIDER", "CALLS"]
    assert [r.split() for r in rows[:4]] == [
        ["user", MODEL, PROVIDER[:12], "2", "1000", "3000", "4000"],
        ["user", MODEL, "12D3KooWOth", "1", "200", "400", "500"],
        ["user", "pub/wordcount", "none", "1", "0", "0", "0"],  # no provider ran it
        ["provider", MODEL, "this", "node", "2", "10", "20", "900"],
    ]
    assert header.index("LAMPORTS") == rows[0].index("4000")  # the columns line up
    assert json.loads(invoke("usage", "--by", "provider", "--json").output) == BY_PROVIDER
    assert invoke("usage", "--by", "user").exit_code == 2


def test_tasks_ls_shows_a_model_calls_tokens(fake: type[FakeClient]) -> None:
    fake.answers["tasks"] = {
        "tasks": [
            task(version="", input_tokens=12, output_tokens=34),  # a model call names no version
            task(agent="pub/wordcount"),
        ]
    }
    out = invoke("tasks", "ls")
    assert out.exit_code == 0, out.output
    header, model_call, agent_task = out.output.splitlines()
    assert "TOKENS" in header.split()
    assert model_call.split()[-1] == "12/34" and short_ref(MODEL) in model_call
    assert "12/34" not in agent_task and "  pub/wordcount@1.0.0  " in agent_task
    listed = json.loads(invoke("tasks", "ls", "--json").output)["tasks"]
    assert (listed[0]["input_tokens"], listed[0]["output_tokens"]) == (12, 34)
