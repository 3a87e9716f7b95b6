"""The whole marketplace on one machine, step by step, on a fresh testnet.

    python scripts/demo.py            # about a minute; exits 1 at the first broken step

It starts a localnet ledger and four nodes (scripts/testnet.py): node1 is the
creator, node2 and node3 are providers of the creator's agent, node4 is a
user. Each step runs the `mercato` command a person would type, prints it
and what came back, and checks the result:

 1. every wallet is funded by the ledger's faucet;
 2. the creator publishes the `wordcount` agent, priced per task with a royalty;
 3. the creator releases its build; the build lands on the peers responsible for it;
 4. the user searches, finds the listing and the providers that run it;
 5. the user runs it three times and pays each time (payment channels open);
 6. the providers that served close their channels on the ledger;
 7. the creator's royalty and the provider's earnings show in their wallets,
    to the lamport;
 8. a composite agent: the creator publishes `digest` (runtime/examples), which
    calls `wordcount` as a paid sub-task; provider A runs it and pays provider B,
    and the user, within the budget it sets, pays the digest's price plus
    exactly what the call cost.

The testnet is stopped at the end, whatever happened (``--keep`` leaves it up).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from testnet import ROOT, Testnet, TestnetError, wait_until

BUILD = ROOT / "runtime" / "examples" / "wordcount" / "wordcount.wasm"
DIGEST = ROOT / "runtime" / "examples" / "digest" / "digest.wasm"
DIGEST_PRICE = 5_000_000
PRICE = 10_000_000  # lamports per task (0.01 SOL)
ROYALTY_BPS = 1_000  # 10 % to the creator
TASKS = 3
FEE = 5_000  # lamports per signature
STEP_TIMEOUT_S = 60.0
NAMES = {1: "creator", 2: "provider A", 3: "provider B", 4: "user"}


class StepFailed(Exception):
    """A step of the story did not come out as it should; the message says how."""


class Demo:
    def __init__(self, net: Testnet) -> None:
        self.net = net
        self.step = 0
        self.started = time.monotonic()

    def datadir(self, i: int) -> str:
        return str(self.net.dir / f"node{i}")

    def say(self, text: str) -> None:
        self.step += 1
        print(f"\n[{self.step}] {text}  (+{time.monotonic() - self.started:.1f} s)", flush=True)

    def mercato(self, i: int, *args: str, stdin: str | None = None, show: bool = True) -> str:
        """Run `mercato ARGS` against node i, as a person would; its stdout."""
        if show:
            print(f"  {NAMES[i]}$ mercato {' '.join(args)}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "mercato.cli", *args, "--data-dir", self.datadir(i)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        if done.returncode != 0:
            raise StepFailed(f"`mercato {' '.join(args)}` failed: {done.stderr.strip()[-800:]}")
        return done.stdout

    def json_of(self, i: int, *args: str, stdin: str | None = None, show: bool = False) -> Any:
        return json.loads(self.mercato(i, *args, "--json", stdin=stdin, show=show))

    def wait(self, condition: Callable[[], Any], what: str) -> Any:
        return wait_until(condition, STEP_TIMEOUT_S, what)

    def balances(self) -> dict[int, int]:
        return {i: self.json_of(i, "wallet")["balance"] for i in NAMES}


def story(demo: Demo, agent: str, workdir: Path) -> None:
    demo.say("Every wallet is funded by the localnet's faucet")
    wallets = {i: demo.json_of(i, "wallet") for i in NAMES}
    for i, wallet in wallets.items():
        print(f"  {NAMES[i]:<10} {wallet['address']}  {wallet['balance'] / 1e9:.4f} SOL")
        if wallet["balance"] <= 0:
            raise StepFailed(f"the {NAMES[i]}'s wallet is empty")

    demo.say("The creator publishes an agent")
    manifest = workdir / "MANIFEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            name = "wordcount"
            kind = "agent"
            title = "Word count"
            summary = "Counts the words of a text."
            price = {PRICE}
            royalty_bps = {ROYALTY_BPS}
            tags = ["text"]
            """
        )
    )
    print(textwrap.indent(manifest.read_text(), "    "))
    print("  " + demo.mercato(1, "publish", str(manifest)).strip())

    demo.say("The creator releases its build; it lands on the peers responsible for it")
    print("  " + demo.mercato(1, "release", "wordcount", "1.0.0", "--build", str(BUILD)).strip())
    cid = demo.json_of(1, "show", agent)["releases"][0]["cid"]

    def holders() -> list[int]:
        out = []
        for i in NAMES:
            builds = demo.json_of(i, "builds", "ls")["builds"]
            if any(b["cid"] == cid and b["complete"] for b in builds):
                out.append(i)
        return out if len(out) >= 3 else []

    held = demo.wait(holders, "three copies of the build")
    print(f"  {cid} is held by: " + ", ".join(f"node{i} ({NAMES[i]})" for i in held))

    demo.say("The user searches the marketplace and finds the agent and its providers")

    def found() -> list[dict[str, Any]]:
        hits = demo.json_of(4, "search", "word count")["results"]
        return [h for h in hits if f"{h['publisher']}/{h['name']}" == agent]

    hit = demo.wait(found, "the listing in the user's registry")[0]
    print(f"  user$ mercato search 'word count'\n    {hit['title']} - {agent}, {PRICE} lamports")
    providers = demo.wait(
        lambda: demo.json_of(4, "providers", agent)["providers"], "the providers' cards"
    )
    for card in providers:
        print(f"    provider {card['provider']}  price {card['price']}")

    demo.say(f"The user runs the agent {TASKS} times and pays for each")
    before = demo.balances()
    paid: dict[str, int] = {}  # channel -> cumulative amount on its latest receipt
    for n in range(TASKS):
        text = f"task number {n + 1} of the demo"
        answer = demo.json_of(4, "run", agent, "--input", "-", stdin=text, show=n == 0)
        receipt = answer["receipt"]
        channel, cumulative = receipt["channel"], receipt["cumulative"]
        print(
            f"    {text!r} -> {answer['output'].strip()}\n"
            f"      by ...{answer['provider'][-8:]}; {cumulative} paid so far on channel "
            f"{channel[:8]}..."
        )
        if json.loads(answer["output"]).get("words") != len(text.split()):
            raise StepFailed(f"the agent answered {answer['output']!r} to {text!r}")
        if cumulative <= paid.get(channel, 0) or cumulative % PRICE:
            raise StepFailed(f"the receipt's {cumulative} does not add a price to the channel")
        paid[channel] = cumulative
    # The user's node cross-checks some answers on a second provider, and pays it too:
    # what it paid in all is on its own side of each channel.
    paid = {
        c["stake"]: c["paid"]
        for c in demo.json_of(4, "channel", "ls")["channels"]
        if c["role"] == "payer" and c["paid"]
    }
    checks = sum(paid.values()) // PRICE - TASKS
    print(f"  {TASKS} tasks and {checks} cross-checks paid on {len(paid)} channel(s)")

    demo.say("The providers close their channels on the ledger")
    closed: dict[str, int] = {}
    for i in (2, 3):
        for channel in demo.json_of(i, "channel", "ls")["channels"]:
            if channel["role"] != "payee" or channel["status"] != "open":
                continue
            print("  " + demo.mercato(i, "channel", "close", channel["stake"]).strip())
            status = demo.json_of(i, "channel", "show", channel["stake"])["status"]
            if status != "closed":
                raise StepFailed(f"channel {channel['stake']} is {status}, not closed")
            closed[channel["stake"]] = channel["paid"]
    if closed != paid:
        raise StepFailed(f"the providers closed {closed}, but the user paid {paid}")

    demo.say("The creator's royalty and the providers' earnings are in their wallets")
    after = demo.balances()
    total = sum(paid.values())
    royalty = total * ROYALTY_BPS // 10_000
    earned = sum(after[i] - before[i] for i in (2, 3))
    for i in NAMES:
        print(f"  {NAMES[i]:<10} {(after[i] - before[i]) / 1e9:+.6f} SOL")
    if after[1] - before[1] != royalty:
        raise StepFailed(f"the creator got {after[1] - before[1]}, not the royalty {royalty}")
    fees = len(closed) * 2 * FEE  # each close: the provider's and the nonce authority's
    if earned != total - royalty - fees:
        raise StepFailed(f"the providers got {earned}, not {total - royalty} less {fees} in fees")
    print(
        f"  paid {total} lamports in all: royalty {royalty} (10 %) to the creator, "
        f"{total - royalty} to the providers, less {fees} in ledger fees"
    )
    held = before[4] - after[4] - total
    print(
        f"  the user's other {held} lamports are its channels' opening fees and the rent "
        "their accounts keep until the lockup ends (then `mercato channel refund`)"
    )
    composite(demo, agent, workdir)


def composite(demo: Demo, agent: str, workdir: Path) -> None:
    """Step 8: an agent that calls another, paid through the tree."""
    demo.say("A composite agent: digest calls wordcount, and the user sets a budget")
    manifest = workdir / "DIGEST.toml"
    manifest.write_text(
        textwrap.dedent(
            f"""\
            name = "digest"
            kind = "agent"
            title = "Digest"
            summary = "Counts the words of a text with the wordcount agent's help."
            price = {DIGEST_PRICE}
            royalty_bps = {ROYALTY_BPS}
            [limits]
            timeout_s = 30
            max_subcalls = 2
            """
        )
    )
    print("  " + demo.mercato(1, "publish", str(manifest)).strip())
    # It declares wordcount only: its model call (a summary) is refused, free.
    release = ("release", "digest", "1.0.0", "--build", str(DIGEST), "--depends", f"{agent}=^1")
    print("  " + demo.mercato(1, *release).strip())
    digest = agent.rsplit("/", 1)[0] + "/digest"
    demo.wait(lambda: demo.json_of(4, "providers", digest)["providers"], "digest's provider")
    budget = DIGEST_PRICE + PRICE
    text = "a composite agent pays its calls"
    answer = demo.json_of(4, "run", digest, "--budget", str(budget), "--input", "-", stdin=text)
    out = json.loads(answer["output"])
    parts = f"wordcount {json.dumps(out['wordcount'])}, summary {json.dumps(out['summary'])}"
    print(f"    {text!r} -> {parts}")
    for call in answer["subcalls"]:
        print(
            f"      {call['op']} {call['target']}: {call['status_name']}, {call['cost']} lamports"
        )
    if (out["wordcount"] or {}).get("words") != len(text.split()):
        raise StepFailed(f"digest answered {answer['output']!r}")
    costs = [(c["op"], c["status_name"], c["cost"]) for c in answer["subcalls"]]
    if costs != [("call", "ok", PRICE), ("infer", "undeclared", 0)]:
        raise StepFailed(f"digest's calls came out as {costs}")
    if answer["cost"] != DIGEST_PRICE + PRICE:
        raise StepFailed(f"the user paid {answer['cost']}, not {DIGEST_PRICE} + {PRICE}")
    print(
        f"  the user paid {answer['cost']} lamports within its budget of {budget}: the "
        f"digest's {DIGEST_PRICE} and the {PRICE} its call to wordcount cost"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", type=Path, help="where the testnet lives (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="leave the testnet running")
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mercato-demo-"))
    net = Testnet(workdir)
    demo = Demo(net)
    ok = False
    try:
        demo.say(f"A testnet: a localnet ledger and {len(NAMES)} nodes in {workdir}")
        net.init(len(NAMES))
        publisher = demo.json_of(1, "keys", "show", "default")["address"]
        agent = f"{publisher}/wordcount"
        digest = f"{publisher}/digest"
        serve = {2: ("--serve", agent, "--serve", digest), 3: ("--serve", agent)}
        state = net.up(len(NAMES), extra=lambda i: serve.get(i, ()))
        for node in state.nodes:
            print(f"  {node.name} ({NAMES[int(node.name[4:])]}): {node.addr}")
        story(demo, agent, workdir)
        ok = True
    except (StepFailed, TestnetError) as exc:
        print(f"\nFAILED at step {demo.step}: {exc}", file=sys.stderr)
    except Exception as exc:  # a broken answer (a missing field): still a failed step
        print(f"\nFAILED at step {demo.step}: {exc!r}", file=sys.stderr)
    finally:
        if not args.keep:
            left = net.down()
            if left:
                print("still open after down: " + ", ".join(left), file=sys.stderr)
                ok = False
            elif args.dir is None:
                shutil.rmtree(workdir, ignore_errors=True)
    if ok:
        print(f"\nThe whole story ran in {time.monotonic() - demo.started:.1f} s.")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
