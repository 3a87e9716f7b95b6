"""`mercato run --budget`: documented, and a bad value is a usage error before the
node is asked anything. A run with a budget, its cost and its sub-calls on
stderr and in --json, is tested on real daemons in
tests/models/test_composite_daemons.py."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mercato.cli import main

AGENT = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/summarise"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_budget_is_documented_and_a_bad_one_is_a_usage_error(tmp_path: Path) -> None:
    helped = invoke("run", "--help")
    assert helped.exit_code == 0 and "--budget LAMPORTS" in helped.output
    assert "composite agent's sub-calls included" in " ".join(helped.output.split())
    # No node runs in this data dir: a usage error is found before one is asked.
    for bad in ("-1", "lots", str(10**15 + 1)):
        out = invoke("run", AGENT, "--budget", bad, "--data-dir", str(tmp_path))
        assert out.exit_code == 2 and "--budget" in out.stderr, (bad, out.output)
