from __future__ import annotations

import base64
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import click

from mercato.node import ControlClient, ControlError, VersionError, VersionRange

from . import _ids
from ._common import data_dir_option, fail, print_json, read_input, resolve
from ._format import lamports, relative, short_id, short_ref, sol, table, when

PROOF_TIMEOUT_S = 60.0  # reads the ledger's history
MAX_LAMPORTS = 10**15  # a budget, at most (the control API's bound)


@click.command("run")
@data_dir_option
@click.argument("ref", metavar="[PUBLISHER/]NAME[@VERSION]")
@click.option(
    "--input",
    "input_file",
    metavar="FILE|-",
    help="The task input: a file, or - for stdin [default: stdin when it is a pipe or a "
    "file; no input on a terminal].",
)
@click.option(
    "--provider", metavar="PEER", help="Run it on this peer (id, id prefix, or multiaddr)."
)
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
    help="Confirm without asking on the terminal: a run above [spending] approve_above, "
    "or a paid run with an empty input.",
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

    The input is --input FILE, or this command's stdin when it is a pipe or a
    file (on a terminal, without --input, the input is empty). The agent is
    PUBLISHER/NAME, a publisher prefix (GxSc/wordcount), or NAME alone when one
    listing in this node's registry has it; @VERSION is a semver range.

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
    it needs --yes. It then runs on that provider at that price. A paid run
    with an empty input is asked about the same way (an empty pipe is most
    often a mistake), and needs --yes without a terminal; a free one just runs.

    Exits 0 when the run ended ok, 1 when it failed or ended otherwise (the
    outcome on stderr), 2 on a usage error.

    \b
    Example:
      echo "count these words" | mercato run wordcount
      mercato run 8Co4.../wordcount@^1.0 --input notes.txt --provider 12D3KooW... --receipt
      mercato run 8Co4.../wordcount --input notes.txt --yes --idempotency-key notes-2024-06-01
      mercato run 8Co4.../summarise --input page.html --budget 50000
    """
    agent, _, version = ref.partition("@")  # the range first: only the name is looked up
    if not agent or agent.count("/") > 1 or not all(agent.split("/")):
        raise click.BadParameter(f"{ref!r}: expected [PUBLISHER/]NAME[@VERSION]", param_hint="REF")
    if version:
        try:
            VersionRange.parse(version)
        except VersionError as exc:
            raise click.BadParameter(f"{ref!r}: {exc}", param_hint="@VERSION") from exc
    if idempotency_key is not None and not _key_ok(idempotency_key):
        raise click.BadParameter(
            "1 to 128 characters of A-Z a-z 0-9 . _ : -", param_hint="--idempotency-key"
        )
    stdin = read_input(input_file)
    client = ControlClient(resolve(data_dir), timeout=600)
    agent = _ids.listing_ref(client, agent)
    if provider is not None:
        provider = _ids.peer_id(client, provider)
    version = version or "*"
    key = idempotency_key
    agreed = -1  # the price the user said yes to on the terminal, if asked
    if not stdin and not confirmed:
        agreed = _empty_input_agreed(client, agent, version, provider, budget)
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
        if quote["needs_approval"] and not confirmed and quote["most"] > agreed:
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


def _key_ok(key: str) -> bool:
    """An idempotency key as the node takes it: 1 to 128 of A-Z a-z 0-9 . _ : -."""
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
    return 1 <= len(key) <= 128 and set(key) <= allowed


def _empty_input_agreed(
    client: ControlClient, agent: str, version: str, provider: str | None, budget: int | None
) -> int:
    """For a run with an empty input: nothing to ask if it is free; else ask on
    the terminal, or fail without one. The lamports the user agreed to (-1: none
    asked)."""
    quote = client.quote(agent, version, 0, provider, budget)
    most = max(quote["most"], budget or 0)
    if most == 0:
        return -1
    pay = f"up to {lamports(most)}" if budget else lamports(most)
    answer = _ask(f"the input is empty: run anyway and pay {pay}? [y/N] ")
    if answer is None:
        fail(
            f"the input is empty and this run costs {pay}: give the input with --input "
            "FILE or on stdin, or run again with --yes to pay for an empty one"
        )
    if answer not in ("y", "yes"):
        fail("not confirmed: nothing was run or paid")
    return most


def _ask(question: str) -> str | None:
    """The answer typed on the terminal (not stdin, which may carry the input),
    lowercased; None when there is no terminal to ask on."""
    try:
        with open("/dev/tty", "r+") as tty:
            tty.write(question)
            tty.flush()
            return tty.readline().strip().lower()
    except OSError:
        return None


def _tell_subcalls(done: dict[str, Any]) -> None:
    """On stderr, for a run that made sub-calls: what it cost, and each sub-call."""
    calls = done.get("subcalls") or []
    if not calls:
        return
    price = done["receipt"].get("price", 0)
    cost = done.get("cost", price)
    # Plain numbers, as the README shows this line (and scripts may read it).
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
    answer = _ask(
        f"Run {agent}@{quote['version']} on {quote['provider']} for "
        f"{lamports(quote['price'])}{more}? [y/N] "
    )
    if answer is None:
        costs = f"may cost {lamports(budget)}" if budget else f"costs {lamports(quote['price'])}"
        fail(
            f"this run {costs}, above [spending] approve_above, and "
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
        return "no limit" if value is None else lamports(value)

    click.echo(f"day            {shown['day']} (UTC)")
    click.echo(f"spent today    {lamports(shown['spent_today'])}")
    click.echo(f"reserved       {lamports(shown['reserved'])} (runs in flight)")
    click.echo(f"left today     {limit(shown['left_today'])}")
    click.echo(f"max per task   {limit(shown['max_per_task'])}")
    click.echo(f"max per day    {limit(shown['max_per_day'])}")
    click.echo(f"approve above  {limit(shown['approve_above'])}")


@click.command("providers")
@data_dir_option
@click.argument("agent", metavar="[PUBLISHER/]NAME")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def providers(data_dir: Path | None, agent: str, as_json: bool) -> None:
    """List the providers whose agent card says they run AGENT, best first.

    Each row shows the price and load from the provider's card, and this
    node's own experience of it: reputation score (0.5 for a stranger), tasks
    that went well, failed, or were caught wrong, and the mean round trip.
    AGENT may be NAME alone when one listing in this node's registry has it.

    \b
    Example:
      mercato providers wordcount
      mercato providers 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount --json
    """
    client = ControlClient(resolve(data_dir))
    found = client.providers(_ids.listing_ref(client, agent))
    if as_json:
        print_json(found)
        return
    if not found["providers"]:
        click.echo(f"no provider has announced {found['agent']}")
        return
    rows = []
    for p in found["providers"]:
        r = p["reputation"]
        latency = "-" if r["latency_ms"] is None else f"{r['latency_ms']:.1f} ms"
        failed, wrong = r["failed"] + r["refused"], r["wrong"] + r["bad_receipt"]
        rows.append(
            [p["provider"], f"{p['price']:,}", f"{p['load']:g}", f"{r['score']:.2f}",
             r["ok"], failed, wrong, latency]
        )  # fmt: skip
    headers = ["PROVIDER", "PRICE", "LOAD", "REPUTATION", "OK", "FAILED", "WRONG", "LATENCY"]
    table(headers, rows)


@click.group("tasks")
def tasks() -> None:
    """Tasks this node ran for others (provider) or asked others to run (user).

    A task is named by its id or a prefix of it (4 characters at least), as
    `tasks ls` shows it.

    \b
    Example:
      mercato tasks ls
      mercato tasks show 5f0c9a3e1b7d
      mercato tasks prove 5f0c9a3e1b7d
    """


@tasks.command("ls")
@data_dir_option
@click.option("--role", type=click.Choice(["user", "provider"]), help="Only one side.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def tasks_ls(data_dir: Path | None, role: str | None, limit: int, as_json: bool) -> None:
    """List recent tasks, newest first: id, time, side, agent, provider, outcome.

    Ids are shown as a prefix that `tasks show` and `tasks prove` take back;
    --json gives them whole. A model call also shows its tokens, in/out
    (prompt/completion).

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
        return
    rows = []
    for t in found["tasks"]:
        agent = short_ref(t["agent"]) + (f"@{t['version']}" if t["version"] else "")
        rows.append(
            [short_id(t["id"]), when(t["created"]), t["role"], agent,
             short_id(t["provider"]) if t["provider"] else "-",
             t["status"], t["verified"] or "-", _tokens(t)]
        )  # fmt: skip
    table(["ID", "CREATED", "ROLE", "AGENT", "PROVIDER", "STATUS", "VERIFIED", "TOKENS"], rows)


def _tokens(task: dict[str, Any]) -> str:
    """``12/34`` (in/out) for a model call; empty for an agent's task."""
    tokens_in, tokens_out = task.get("input_tokens", 0), task.get("output_tokens", 0)
    return f"{tokens_in}/{tokens_out}" if tokens_in or tokens_out else ""


@tasks.command("show")
@data_dir_option
@click.argument("task_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the receipts whole).")
def tasks_show(data_dir: Path | None, task_id: str, as_json: bool) -> None:
    """Show one task: each side this node saw, its receipt and its failed attempts.

    A composite agent's task lists its sub-calls too: op, target, status,
    cost, error (--json adds each one's provider and signed receipt). ID may
    be a prefix of the task's id.

    \b
    Example:
      mercato tasks show 5f0c9a3e1b7d
      mercato tasks show 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910 --json
    """
    client = ControlClient(resolve(data_dir))
    shown = client.task(_ids.task_id(client, task_id))
    if as_json:
        print_json(shown)
        return
    click.echo(f"task      {shown['task']}")
    for side in shown["sides"]:
        click.echo("")
        _show_side(side)


RECEIPT_HIDDEN = ("subcalls",)  # listed apart, one line each
RECEIPT_WIDTH = 14  # the longest receipt field name, and room


def _show_side(side: dict[str, Any]) -> None:
    """One side of a task (user or provider), as lines a person reads."""
    agent = side["agent"] + (f"@{side['version']}" if side["version"] else "")
    status = side["status"] + (f" ({side['verified']})" if side.get("verified") else "")
    click.echo(f"side      {side['role']}")
    click.echo(f"agent     {agent}")
    click.echo(f"provider  {side['provider'] or '-'}")
    click.echo(f"user      {side.get('user') or '-'}")
    click.echo(f"status    {status}")
    click.echo(f"price     {lamports(side.get('price', 0))}")
    click.echo(f"created   {when(side['created'])} ({relative(side['created'])})")
    if side.get("wall_ms"):
        click.echo(f"took      {side['wall_ms']:,} ms")
    if side.get("input_tokens") or side.get("output_tokens"):
        click.echo(f"tokens    {side['input_tokens']} in, {side['output_tokens']} out")
    if side.get("error"):
        click.echo(f"error     {side['error']}")
    receipt = side.get("receipt")
    if receipt:
        click.echo("receipt" + (f"   ({side['receipt_error']})" if "receipt_error" in side else ""))
        for name, value in receipt.items():
            if name not in RECEIPT_HIDDEN and not isinstance(value, dict | list):
                click.echo(f"  {name:<{RECEIPT_WIDTH}}{value}")
    attempts = side.get("attempts") or []
    if attempts:
        click.echo("attempts that failed")
        for a in attempts:
            click.echo(f"  {a['provider']}: {a['error']}")
    if side.get("subcalls"):
        click.echo("sub-calls")
        for line in subcall_lines(side["subcalls"]):
            click.echo(line)


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
    history (localnet or a cluster). ID may be a prefix of the task's id.
    Exit code 1 unless verified.

    \b
    Example:
      mercato tasks prove 5f0c9a3e1b7d
      mercato tasks prove 5f0c9a3e1b7d4c2a9e8f6d5c4b3a2910 --json
    """
    client = ControlClient(resolve(data_dir), PROOF_TIMEOUT_S)
    proof = client.task_proof(_ids.task_id(client, task_id))
    if as_json:
        print_json(proof)
    else:
        moment = "-"
        if proof["block_time"] is not None:
            at = datetime.datetime.fromtimestamp(proof["block_time"], datetime.UTC)
            moment = at.strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"task       {proof['task']}")
        click.echo(f"channel    {proof['channel']}")
        click.echo(f"closed by  {proof['signature']}")
        click.echo(f"           slot {proof['slot']}, {moment}")
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
