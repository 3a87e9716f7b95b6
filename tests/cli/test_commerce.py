"""`mercato buy`, `licences`, `refund` and `sales`, and the plans in `show`,
`search` and `run`: their tables, JSON and errors. The output tests run the
commands on a fake client (below); one test runs them on a real daemon."""

import json
import textwrap
import time
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from mercato.cli import main
from mercato.node import DataDir

from ..conftest import run_cli

PUBLISHER = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB"
AGENT = f"{PUBLISHER}/wordcount"
MINT = "7fJrupaZXvcxYiSzuvc78YUKwk9Vhq6qxMS4JskYED39"
BUYER = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM"
EXPIRES = 1_900_000_000
LICENCE = {
    "mint": MINT, "agent": AGENT, "plan": "pro", "kind": "licence", "versions": "^1",
    "expires": 0, "refund_until": EXPIRES, "price": 50_000_000, "party": PUBLISHER,
    "signature": "5" * 88, "time": 1_700_000_000.0, "refunded": "", "state": "active",
}  # fmt: skip
SUBSCRIPTION = {
    **LICENCE, "mint": BUYER, "plan": "monthly", "kind": "subscription", "versions": "*",
    "expires": EXPIRES, "refund_until": 0, "price": 10_000_000,
}  # fmt: skip
PLANS = {
    "pro": {"kind": "licence", "price": 50_000_000, "versions": "^1", "period_days": 0,
            "run_price": 1000, "refund_days": 14, "transferable": False},
    "monthly": {"kind": "subscription", "price": 10_000_000, "versions": "*",
                "period_days": 30, "run_price": 0, "refund_days": 0, "transferable": True},
}  # fmt: skip
LISTING = {
    "publisher": PUBLISHER, "name": "wordcount", "kind": "agent", "title": "Word count",
    "summary": "Counts words.", "price": 1000, "royalty_bps": 500, "releases": [],
    "plans": PLANS,
}  # fmt: skip


class FakeClient:
    """A fake `ControlClient`: fixed answers of the shapes the control API's models
    give, and a record of the calls; no daemon."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...]]]] = []
    answers: ClassVar[dict[str, Any]] = {}

    def __init__(self, datadir: Any, timeout: float = 10.0) -> None:
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        def method(*args: Any, **kwargs: Any) -> Any:
            FakeClient.calls.append((name, args))
            return FakeClient.answers[name]

        return method


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeClient]:
    FakeClient.calls, FakeClient.answers = [], {}
    for module in ("_commerce", "_registry", "_run"):
        monkeypatch.setattr(f"mercato.cli.{module}.ControlClient", FakeClient)
    return FakeClient


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def local(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def test_licences_print_a_table_with_headers_and_json(fake: type[FakeClient]) -> None:
    fake.answers["licences"] = {"licences": [SUBSCRIPTION, LICENCE]}
    out = invoke("licences")
    assert out.exit_code == 0, out.output
    header, sub, lic = out.output.splitlines()
    assert header.split() == [
        "LISTING", "PLAN", "KIND", "VERSIONS", "STATE", "EXPIRES", "REFUNDS", "PRICE", "MINT"
    ]  # fmt: skip
    assert sub.startswith("8Co4tt4s/wordcount  monthly  subscription")  # `show` takes it back
    assert local(EXPIRES) in sub and "0.01 SOL" in sub and sub.endswith(BUYER)
    assert "never" in lic and local(EXPIRES) in lic and "0.05 SOL" in lic
    assert header.index("MINT") == lic.index(MINT)  # the columns line up
    as_json = invoke("licences", "--json")
    assert json.loads(as_json.output) == fake.answers["licences"]
    fake.answers["licences"] = {"licences": []}
    assert "no licences yet" in invoke("licences").output


def test_buy_and_refund_say_what_happened(fake: type[FakeClient]) -> None:
    fake.answers["buy"] = LICENCE
    out = invoke("buy", AGENT, "--plan", "pro")
    assert out.exit_code == 0, out.output
    assert fake.calls == [("buy", (AGENT, "pro"))]
    assert f"bought licence pro of {AGENT} for 0.05 SOL" in out.output
    assert MINT in out.output and "never" in out.output and local(EXPIRES) in out.output
    assert json.loads(invoke("buy", AGENT, "--plan", "pro", "--json").output) == LICENCE
    fake.answers["refund"] = {**LICENCE, "refunded": "4" * 88, "state": "refunded"}
    out = invoke("refund", MINT)
    assert out.exit_code == 0 and fake.calls[-1] == ("refund", (MINT,))
    assert "0.05 SOL back to this wallet" in out.output and "4" * 88 in out.output
    fake.answers["search"] = {"results": [], "cursor": None}  # no listing has that name
    nameless = invoke("buy", "no-such-name", "--plan", "pro")
    assert nameless.exit_code == 2 and "no listing is named 'no-such-name'" in nameless.stderr
    assert invoke("buy", AGENT).exit_code == 2  # --plan is required


def test_sales_print_totals_then_recent_sales(fake: type[FakeClient]) -> None:
    sold = {**LICENCE, "party": BUYER}
    fake.answers["sales"] = {
        "sales": [sold, {**sold, "state": "refunded"}],
        "totals": [{"agent": AGENT, "plan": "pro", "sales": 2, "lamports": 50_000_000,
                    "refunds": 1}],
    }  # fmt: skip
    out = invoke("sales")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split() == ["LISTING", "PLAN", "SALES", "REFUNDS", "EARNED"]
    assert lines[1].split() == ["8Co4tt4s/wordcount", "pro", "2", "1", "0.05", "SOL"]
    assert lines[3].split()[:2] == ["SOLD", "LISTING"] and BUYER in lines[4]
    assert "refunded" in lines[5]
    assert "1 older sales" in invoke("sales", "--limit", "1").output
    assert json.loads(invoke("sales", "--json").output) == fake.answers["sales"]
    fake.answers["sales"] = {"sales": [], "totals": []}
    assert "no sales yet" in invoke("sales").output


def test_show_lists_the_plans_and_search_marks_listings_sold_by_plan(
    fake: type[FakeClient],
) -> None:
    fake.answers["show"] = LISTING
    out = invoke("show", AGENT)
    assert out.exit_code == 0, out.output
    assert f"mercato buy {AGENT} --plan NAME" in out.output
    rows = {line.split()[0]: line.split() for line in out.output.splitlines()[4:]}
    assert rows["PLAN"][:3] == ["PLAN", "KIND", "PRICE"] and "TRANSFERABLE" in rows["PLAN"]
    assert rows["pro"] == ["pro", "licence", "0.05", "SOL", "^1", "-", "1,000", "lamports",
                           "14", "d", "no"]  # fmt: skip
    assert rows["monthly"][:6] == ["monthly", "subscription", "0.01", "SOL", "*", "30"]
    assert rows["monthly"][-2:] == ["none", "yes"]
    plain = {**LISTING, "name": "plain"}
    del plain["plans"]
    fake.answers["search"] = {"results": [LISTING, plain], "cursor": None, "took_ms": 1.0}
    found = invoke("search").output.splitlines()
    assert found[0].split() == ["LISTING", "VERSION", "PRICE", "SUMMARY"]
    assert found[1].split()[:4] == ["8Co4tt4s/wordcount", "-", "1,000", "lamports*"]
    assert found[2].split()[:4] == ["8Co4tt4s/plain", "-", "1,000", "lamports"]
    assert found[3].startswith("* sold by plan")


def test_run_tells_of_an_upgrade_on_stderr(fake: type[FakeClient]) -> None:
    fake.answers["run_task"] = {
        "task": "0" * 32, "output": "aGk=", "provider": "12D3KooWx", "verified": "receipt",
        "receipt": {"outcome": "ok"}, "attempts": [], "licence": MINT,
        "upgrade": {"version": "2.0.0", "plans": [
            {"name": "pro2", "kind": "licence", "price": 80_000_000, "versions": "^2"}]},
    }  # fmt: skip
    out = CliRunner().invoke(main, ["run", AGENT], input="hi")
    assert out.exit_code == 0, out.output
    assert out.stdout == "hi"
    assert "upgrade available: 2.0.0 with plan pro2 (0.08 SOL)" in out.stderr
    assert f"mercato buy {AGENT} --plan pro2" in out.stderr
    fake.answers["run_task"] = {**fake.answers["run_task"], "upgrade": None}
    assert CliRunner().invoke(main, ["run", AGENT], input="hi").stderr == ""


MANIFEST = textwrap.dedent(
    """
    name = "wordcount"
    kind = "agent"
    title = "Word count"
    summary = "Counts words."
    price = 1000
    royalty_bps = 500

    [plans.pro]
    kind = "licence"
    price = 50_000_000
    versions = "^1"
    refund_days = 14
    """
)


def test_the_commands_on_a_real_daemon(tmp_path, datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)

    def cli(*args: str):
        return run_cli(*args, "--data-dir", str(datadir.root))

    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(MANIFEST)
    assert cli("publish", str(manifest)).returncode == 0
    shown = cli(
        "show",
        f"{json.loads(cli('keys', 'show', 'default', '--json').stdout)['address']}/wordcount",
    )
    assert shown.returncode == 0, shown.stderr
    assert "pro" in shown.stdout and "0.05 SOL" in shown.stdout and "14 d" in shown.stdout
    assert "1,000 lamports*" in cli("search", "word").stdout
    assert "no licences yet" in cli("licences").stdout
    assert json.loads(cli("sales", "--json").stdout) == {"sales": [], "totals": []}
    refused = cli("buy", f"{PUBLISHER}/nothing", "--plan", "pro")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "no listing" in refused.stderr
    assert refused.stderr.count("\n") == 1
    unknown = cli("refund", MINT)
    assert unknown.returncode == 1 and "mercato licences" in unknown.stderr
