from __future__ import annotations

import base64
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient, ControlError

from ._commerce import sol
from ._common import data_dir_option, fail, print_json, read_input, resolve

PROOF_TIMEOUT_S = 60.0  # reads the ledger's history
MAX_LAMPORTS = 10**15  # a budget, at most (the control API's bound)


@click.command("run")
@data_dir_option
@click.argument("ref", metavar="PUBLISHER/NAME[@VERSION]")
@click.option("--input", "input_file", metavar="FILE|-", help="The task input: a file, or -.")
@click.option("--provider", metavar="PEER", help="Run it on this peer (id or multiaddr).")
@click.option(
    "--output",
    "output_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the output here instead of printing it.",
)
@click.option(
    "--max-price",
    type=click.IntRange(min=0),
    metavar="LAMPORTS",
    help="Pay at most this per task (default: the listing's price).",
)
@click.option(
    "--budget",
    type=click.IntRange(min=0, max=MAX_LAMPORTS),
    metavar="LAMPORTS",
    help="The most the whole run may cost, a composite agent's sub-calls included; "
    "default: its price, so only free sub-calls.",
)
@click.option(
    "--yes",
    "confirmed",
    is_flag=True,
    help="Confirm a run above [spending] approve_above without asking on the terminal.",
)
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="A retry with the same key returns the first run's result: it never runs or pays "
    "twice (1 to 128 characters of A-Z a-z 0-9 . _ : -).",
)
@click.option("--receipt", "show_receipt", is_flag=True, help="Print the signed receipt too.")
@click.option("--json", "as_json", is_flag=True, help="Print output and receipt as JSON.")
def run(
    data_dir: Path | None,
    ref: str,
    input_file: str | None,
    provider: str | None,
    output_file: Path | None,
    max_price: int | None,
    budget: int | None,
    confirmed: bool,
    idempotency_key: str | None,
    show_receipt: bool,
    as_json: bool,
) -> None:
    """Run an agent on a provider, from this node; print its output.

    This node asks the best providers for quotes, runs the task on the best
    quote (by price, reputation, latency and load), and checks the signed
    receipt (signature, input, output, price, build) before printing anything;
    some tasks are cross-checked on a second provider or locally. A provider
    that fails is replaced by the next. A paid agent is paid through a payment
    channel to the provider, opened on the first payment.

    A composite agent calls other agents and models, paid as sub-calls: give
    it a --budget, the most the whole run may cost; without one only its free
    sub-calls succeed. The cost and each sub-call (op, target, status, cost,
    error) are printed on stderr.

    Runs obey the node's [spending] limits, which weigh the budget when there
    is one. A run that may cost more than approve_above is quoted first and
    asked about on the terminal (agent, provider, price); without a terminal
    it needs --yes. It then runs on that provider at that price.

    \b
    Example:
      echo "count these words" | mercato run 8Co4.../wordcount --input -
      mercato run 8Co4.../wordcount@^1.0 --input notes.txt --provider 12D3KooW... --receipt
      mercato run 8Co4.../wordcount --input notes.txt --yes --idempotency-key notes-2024-06-01
      mercato run 8Co4.../summarise --input page.html --budget 50000
    """
    agent, _, version = ref.partition("@")
    if agent.count("/") != 1 or not all(agent.split("/")):
        raise click.BadParameter(f"{ref!r}: expected PUBLISHER/NAME[@VERSION]")
    stdin = read_input(input_file)
    client = ControlClient(resolve(data_dir), timeout=600)
    version = version or "*"
    key = idempotency_key
    try:
        done = client.run_task(
            agent, version, stdin, provider, max_price, idempotency_key=key, budget=budget
        )
    except ControlError as exc:
        if exc.code != "approval_needed":
            raise
        quote = client.quote(agent, version, len(stdin), provider, budget)
        if max_price is not None and quote["price"] > max_price:
            fail(f"the best quote asks {quote['price']} lamports, over --max-price {max_price}")
        if quote["needs_approval"] and not confirmed:
            _confirm(agent, quote, budget)
        done = client.run_task(
            agent, version, stdin, quote["provider"], quote["price"],
            approved=True, idempotency_key=key, budget=budget,
        )  # fmt: skip
    output = base64.b64decode(done["output"])
    if done.get("upgrade"):
        _tell_upgrade(agent, done["upgrade"])
    if as_json:
        print_json({**done, "output": output.decode(errors="replace")})
        return
    if output_file is not None:
        output_file.write_bytes(output)
    else:
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    _tell_subcalls(done)
    if show_receipt:
        shown = {**done["receipt"], "verified": done["verified"]}
        click.echo(json.dumps(shown, indent=2), err=True)
    if done["receipt"]["outcome"] != "ok":
        click.echo(f"the run ended as {done['receipt']['outcome']}", err=True)
        sys.exit(1)


def _tell_subcalls(done: dict[str, Any]) -> None:
    """On stderr, for a run that made sub-calls: what it cost, and each sub-call."""
    calls = done.get("subcalls") or []
    if not calls:
        return
    price = done["receipt"].get("price", 0)
    cost = done.get("cost", price)
    click.echo(f"cost {cost} lamports: price {price}, sub-calls {cost - price}", err=True)
    for line in subcall_lines(calls):
        click.echo(line, err=True)


def subcall_lines(calls: list[dict[str, Any]]) -> list[str]:
    """One line per sub-call: op, target, status, cost, and the error if any."""
    return [
        f"  {c['op']:<5}  {c['target']}  {c['status_name']}  {c['cost']} lamports"
        + (f"  ({c['error']})" if c["error"] else "")
        for c in calls
    ]


def _tell_upgrade(agent: str, upgrade: dict[str, Any]) -> None:
    """On stderr: a newer release than the licence used covers, and what buys it."""
    offers = " or ".join(f"{p['name']} ({sol(p['price'])})" for p in upgrade["plans"])
    if not offers:
        click.echo(f"upgrade available: {upgrade['version']} (no plan sells it yet)", err=True)
        return
    click.echo(f"upgrade available: {upgrade['version']} with plan {offers}", err=True)
    first = upgrade["plans"][0]["name"]
    click.echo(f"  buy it with: mercato buy {agent} --plan {first}", err=True)


def _confirm(agent: str, quote: dict[str, Any], budget: int | None = None) -> None:
    """Ask on the terminal (not stdin, which may carry the input) to pay the quote,
    and the sub-calls within ``budget``."""
    more = f" (the whole run within {budget}, sub-calls included)" if budget else ""
    question = (
        f"Run {agent}@{quote['version']} on {quote['provider']} for {quote['price']} "
        f"lamports{more}? [y/N] "
    )
    try:
        with open("/dev/tty", "r+") as tty:  # the terminal, not stdin
            tty.write(question)
            tty.flush()
            answer = tty.readline().strip().lower()
    except OSError:
        costs = f"may cost {budget}" if budget else f"costs {quote['price']}"
        fail(
            f"this run {costs} lamports, above [spending] approve_above, and "
            "there is no terminal to confirm it on: run again with --yes"
        )
    if answer not in ("y", "yes"):
        fail("not confirmed: nothing was run or paid")


@click.command("spending")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def spending(data_dir: Path | None, as_json: bool) -> None:
    """Show what this node's tasks paid today (UTC) and its [spending] limits.

    Spent is what the tasks of today paid; reserved, what runs in flight may
    still pay; left, what the daily limit leaves (it resets at 00:00 UTC).

    \b
    Example:
      mercato spending
      mercato spending --json
    """
    shown = ControlClient(resolve(data_dir)).spending()
    if as_json:
        print_json(shown)
        return

    def limit(value: int | None) -> str:
        return "no limit" if value is None else f"{value} lamports"

    click.echo(f"day            {shown['day']} (UTC)")
    click.echo(f"spent today    {shown['spent_today']} lamports")
    click.echo(f"reserved       {shown['reserved']} lamports (runs in flight)")
    click.echo(f"left today     {limit(shown['left_today'])}")
    click.echo(f"max per task   {limit(shown['max_per_task'])}")
    click.echo(f"max per day    {limit(shown['max_per_day'])}")
    click.echo(f"approve above  {limit(shown['approve_above'])}")


@click.command("providers")
@data_dir_option
@click.argument("agent", metavar="PUBLISHER/NAME")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(data_dir: Path | None, agent: str, as_json: bool) -> None:
    """List the providers whose agent card says they run AGENT, best first.

    Each line shows the price and load from the provider's card, and this
    node's own experience of it: reputation score (0.5 for a stranger), tasks
    that went well, failed, or were caught wrong, and the mean round trip.

    \b
    Example:
      mercato providers 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount
    """
    found = ControlClient(resolve(data_dir)).providers(agent)
    if as_json:
        print_json(found)
        return
    if not found["providers"]:
        click.echo(f"no provider has announced {agent}")
    for p in found["providers"]:
        r = p["reputation"]
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
        click.echo(
            f"{p['provider']}  price {p['price']}  load {p['load']:g}  "
            f"reputation {r['score']:.2f} (ok {r['ok']}, failed {r['failed'] + r['refused']}, "
            f"wrong {r['wrong'] + r['bad_receipt']})  latency {latency}"
        )


@click.group("tasks")
def tasks() -> None:
    """Tasks this node ran for others (provider) or asked others to run (user).

    \b
    Example:
      mercato tasks ls
      mercato tasks show 5f0c9a...
      mercato tasks prove 5f0c9a...
    """


@tasks.command("ls")
@data_dir_option
@click.option("--role", type=click.Choice(["user", "provider"]), help="Only one side.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks_ls(data_dir: Path | None, role: str | None, limit: int, as_json: bool) -> None:
    """List recent tasks, newest first: id, side, agent, provider, outcome.

    A model call also shows its tokens, in/out (prompt/completion).

    \b
    Example:
      mercato tasks ls --role user --limit 5
    """
    found = ControlClient(resolve(data_dir)).tasks(limit, role)
    if as_json:
        print_json(found)
        return
    if not found["tasks"]:
        click.echo("no tasks yet")
    for t in found["tasks"]:
        when = datetime.datetime.fromtimestamp(t["created"]).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{t['id']}  {when}  {t['role']:<8}  {t['agent']}"
            + (f"@{t['version']}" if t["version"] else "")  # a model call names no version
            + f"  {(t['provider'] or '-')[:20]}…  {t['status']}"
            + (f"  ({t['verified']})" if t["verified"] else "")
            + _tokens(t)
        )


def _tokens(task: dict[str, Any]) -> str:
    """``  tokens 12/34`` (in/out) for a model call; empty for an agent's task."""
    tokens_in, tokens_out = task.get("input_tokens", 0), task.get("output_tokens", 0)
    return f"  tokens {tokens_in}/{tokens_out}" if tokens_in or tokens_out else ""


@tasks.command("show")
@data_dir_option
@click.argument("task_id", metavar="ID")
def tasks_show(data_dir: Path | None, task_id: str) -> None:
    """Show one task: each side this node saw, its receipt and its failed attempts.

    A composite agent's task lists its sub-calls too: op, target, status,
    cost, error, provider and signed receipt of each.

    \b
    Example:
      mercato tasks show 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910
    """
    print_json(ControlClient(resolve(data_dir)).task(task_id))


@tasks.command("prove")
@data_dir_option
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks_prove(data_dir: Path | None, task_id: str, as_json: bool) -> None:
    """Prove that a paid task's receipt is settled on the ledger, by its channel's close.

    Every channel state this node signs commits, in a memo, to the receipts it
    verified on that channel (their count and Merkle root); the provider closes
    the channel with the latest. This finds the closing transaction on the
    ledger, reads the commitment in its memo, and checks the receipt's Merkle
    path against it. It works once the channel is closed, on a ledger that keeps
    history (localnet or a cluster). Exit code 1 unless verified.

    \b
    Example:
      mercato tasks prove 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910
      mercato tasks prove 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910 --json
    """
    proof = ControlClient(resolve(data_dir), PROOF_TIMEOUT_S).task_proof(task_id)
    if as_json:
        print_json(proof)
    else:
        when = "-"
        if proof["block_time"] is not None:
            moment = datetime.datetime.fromtimestamp(proof["block_time"], datetime.UTC)
            when = moment.strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"task       {proof['task']}")
        click.echo(f"channel    {proof['channel']}")
        click.echo(f"closed by  {proof['signature']}")
        click.echo(f"           slot {proof['slot']}, {when}")
        click.echo(f"commits    {proof['count']} receipts, root {proof['root']}")
        click.echo(f"receipt    {proof['index'] + 1} of them, leaf {proof['leaf']}")
        for i, sibling in enumerate(proof["path"]):
            click.echo(f"{'path' if i == 0 else '':<11}{sibling}")
        if proof["verified"]:
            click.echo("verified   yes: the path leads from the receipt to the close's root")
        else:
            click.echo(f"verified   no: {proof['reason']}")
    if not proof["verified"]:
        sys.exit(1)
