"""Two daemons and a localnet: a creator's model listing, a provider daemon serving it
from a real `llama-server`, and a user daemon that the official `openai` client
and `mercato chat` call. What the provider earned and the user spent match the
signed token counts to the lamport, in both books and in `mercato usage`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import openai
import pytest
from engine import Engine

from mercato.node import DataDir, init_data_dir
from mercato.node.models import cost

from ..conftest import api_info, run_cli, wait_for

INPUT_PRICE, OUTPUT_PRICE = 2_000, 40_000  # lamports per 1,000 tokens


def cli(datadir: DataDir, *args: str):
    return run_cli(*args, "--data-dir", str(datadir.root), timeout=120)


def json_of(datadir: DataDir, *args: str):
    done = cli(datadir, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_daemons_on_a_localnet_serve_and_pay_for_a_model(
    tmp_path: Path, start_daemon, start_localnet, llama_engine: Engine
) -> None:
    localnet = start_localnet()
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": localnet.url}
    creator, provider, user = (DataDir(tmp_path / n) for n in ("creator", "provider", "user"))
    start_daemon(creator, env=env)
    publisher = json_of(creator, "keys", "show", "default")["address"]
    model = f"{publisher}/tiny-chat"
    manifest = tmp_path / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""
            name = "tiny-chat"
            kind = "model"
            title = "Tiny chat"
            summary = "A tiny model with random weights."
            royalty_bps = 1000
            [model]
            family = "llama"
            parameters = 150000
            quantisation = "F32"
            context_length = 512
            input_price = {INPUT_PRICE}
            output_price = {OUTPUT_PRICE}
            """
        )
    )
    assert cli(creator, "publish", str(manifest)).returncode == 0
    there = json_of(creator, "node", "status")["p2p"]["listen_addrs"][0]
    init_data_dir(provider)
    with provider.config_file.open("a") as config:
        config.write(
            textwrap.dedent(
                f"""
                [models.tiny]
                listing = "{model}"
                backend = "{llama_engine.base_url}"
                engine_model = "{llama_engine.model}"
                health_interval_s = 0.5
                """
            )
        )
    start_daemon(provider, "--bootstrap", there, env=env)
    start_daemon(user, "--bootstrap", there, env=env)
    info = api_info(user)
    token = user.token_file.read_text().strip()
    api = openai.OpenAI(base_url=info["url"] + "/v1", api_key=token, max_retries=0, timeout=60)

    wait_for(lambda: [m.id for m in api.models.list()] == [model], 60, "the model on offer")
    hello = [{"role": "user", "content": "Hello there."}]
    whole = api.chat.completions.create(model=model, messages=hello, max_tokens=16, seed=3)  # type: ignore[arg-type]
    assert whole.choices[0].message.content and whole.usage is not None
    pieces, usage = [], None
    for chunk in api.chat.completions.create(
        model=model, messages=hello, max_tokens=16, seed=4, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ):  # fmt: skip
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert pieces and usage is not None

    # `mercato chat` streams the answer and reports what it cost.
    chatted = cli(user, "chat", model, "-m", "Hi.", "--max-tokens", "8")
    assert chatted.returncode == 0, chatted.stderr
    assert chatted.stdout.strip() and "lamports" in chatted.stderr  # the usage line

    # Each side's task log holds the three calls with the signed counts; the money
    # each book moved is exactly those counts at the prices.
    calls = [t for t in json_of(user, "tasks", "ls")["tasks"] if t["agent"] == model]
    served = [t for t in json_of(provider, "tasks", "ls")["tasks"] if t["agent"] == model]
    assert len(calls) == len(served) == 3
    shown_out = cli(user, "tasks", "show", calls[0]["id"], "--json")
    assert shown_out.returncode == 0, shown_out.stderr
    shown = json.loads(shown_out.stdout)
    (side,) = shown["sides"]
    assert side["receipt"]["output_tokens"] == calls[0]["output_tokens"]
    assert not side.get("receipt_error")
    counts = sorted((t["input_tokens"], t["output_tokens"], t["price"]) for t in calls)
    assert counts == sorted((t["input_tokens"], t["output_tokens"], t["price"]) for t in served)
    for tin, tout, price in counts:
        assert price == cost(tin, tout, INPUT_PRICE, OUTPUT_PRICE) > 0
    assert (usage.prompt_tokens, usage.completion_tokens) in {(c[0], c[1]) for c in counts}
    total = sum(c[2] for c in counts)
    (paying,) = json_of(user, "channel", "ls")["channels"]
    (paid,) = json_of(provider, "channel", "ls")["channels"]
    assert paying["paid"] == total and sum(paid["settled"].values()) == total
    assert paid["owed"] == paying["owed"] and len(paid["owed"]) == 2  # provider, creator
    spent = json_of(user, "usage")
    earned = json_of(provider, "usage")
    assert _row(spent, "user", model) == (
        3,
        sum(c[0] for c in counts),
        sum(c[1] for c in counts),
        total,
    )
    assert _row(earned, "provider", model) == (*_row(spent, "user", model)[:3], total)


def _row(report: dict, role: str, model: str) -> tuple[int, int, int, int]:
    (row,) = [r for r in report["usage"] if r["role"] == role and r["agent"] == model]
    return row["calls"], row["input_tokens"], row["output_tokens"], row["lamports"]
