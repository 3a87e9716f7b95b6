"""sybil: a paid task through one real provider while fake free cards crowd it out.

Three nodes in this process on loopback, one embedded ledger: a provider that
serves the wordcount example at a price, a user, and an attacker that gossips
``fakes`` agent cards for the same agent, each signed by a fresh key, at price
0, naming addresses where no one answers (TEST-NET-1, 192.0.2.0/24: a dial
there fails or hangs until it times out). ``paid_task_s`` is how long the
user's first paid task takes, from a node that has proven nobody yet (target
< 5 s); ``success_ratio`` is over the 20 tasks that follow, each through the
real provider (target 1.0).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mercato.node.tasks._cards import AgentCard, card_topic
from mercato.p2p import Keypair
from mercato.settlement import open_embedded_ledger

from ._nodes import running_nodes

WORDCOUNT = Path(__file__).resolve().parents[2] / "runtime" / "examples" / "wordcount"
LISTING = {"name": "wc", "kind": "agent", "title": "Word count", "summary": "Counts words."}
PRICE = 10_000


async def _serve(provider: Any, user: Any) -> str:
    shown = await provider.registry.publish(
        "default", {**LISTING, "price": PRICE, "royalty_bps": 0}
    )
    wasm = WORDCOUNT / "wordcount.wasm"
    cid = (await provider.builds.add_file(wasm)).cid
    release = {"name": "wc", "version": "1.0.0", "cid": cid, "size": wasm.stat().st_size}
    await provider.registry.release("default", release)
    agent = f"{shown['publisher']}/wc"
    provider.tasks.serve_agents((agent,))
    with trio.fail_after(30):  # polled: no event says the registry and cards have it
        for _ in iter(int, 1):
            known = (await user.registry.show(shown["publisher"], "wc")) or {}
            if known.get("releases") and user.tasks.providers(agent):
                break
            await trio.sleep(0.05)
    return agent


async def _fake_cards(attacker: Any, user: Any, agent: str, count: int) -> None:
    fakes = set()
    for i in range(count):
        key = Keypair.generate()
        card = AgentCard(
            provider=key.peer_id, seq=1, expires=time.time() + 300, agents=[agent], prices=[0],
            load=0.0, addrs=[f"/ip4/192.0.2.{1 + i % 250}/tcp/4001/p2p/{key.peer_id}"],
        )  # fmt: skip
        await attacker.overlay.gossip.publish(card_topic(agent), card.sign(key))
        fakes.add(key.peer_id)
    with trio.fail_after(30):  # polled, as above
        for _ in iter(int, 1):
            if fakes <= {c["provider"] for c in user.tasks.providers(agent)}:
                break
            await trio.sleep(0.05)


async def _run(root: Path, fakes: int) -> dict[str, Any]:
    async with (
        open_embedded_ledger(root / "ledger.db") as ledger,
        running_nodes(root, 3, ledger=ledger) as (provider, user, attacker),
    ):
        for a, b in ((user, provider), (user, attacker), (provider, attacker)):
            await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        agent = await _serve(provider, user)
        await attacker.tasks.exchange.find(agent, 10.0)  # joins the agent's card group
        await attacker.overlay.gossip.wait_for_mesh(user.overlay.peer_id, card_topic(agent))
        await _fake_cards(attacker, user, agent, fakes)
        real = provider.overlay.peer_id
        started = time.perf_counter()
        first = await user.tasks.run_task(agent, "*", b"one two three")
        paid_task_s = time.perf_counter() - started
        through_real = [first["provider"] == real]
        for i in range(20):
            try:
                done = await user.tasks.run_task(agent, "*", b"task %d" % i)
                through_real.append(done["provider"] == real)
            except Exception:
                through_real.append(False)
    return {
        "fakes": fakes,
        "paid_task_s": round(paid_task_s, 3),
        "first_through_real": through_real[0],
        "success_ratio": round(sum(through_real[1:]) / 20, 3),
        "targets": {"paid_task_s": 5, "success_ratio": 1.0},
    }


def run(fakes: int = 20) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-sybil-"))
    try:
        return trio.run(_run, root, fakes)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fakes", type=int, default=20, help="fake cards (default 20)")
    print(run(parser.parse_args().fakes))


if __name__ == "__main__":
    main()
