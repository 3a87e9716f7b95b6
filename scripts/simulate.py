"""How the network behaves as it grows: ``python scripts/simulate.py`` prints JSON.

Two parts, each labelled as what it is in the output:

- ``real``: real overlays (py-libp2p hosts, GossipSub, Kademlia, from p2p/)
  in this one process on loopback, as many as the machine holds in reasonable
  time (``--real-sizes``, default 10,25,50,100), each size in a fresh process. Measured: delivery of
  gossip messages to every node (p50/p99 latency, delivered ratio), DHT
  lookups of signed records (latency), memory per node and the idle CPU each
  node costs (heartbeats, keep-alives).
- ``model``: lightweight nodes in one process, from 25 to 10,000
  (``--sizes``), the largest run directly rather than extrapolated. The
  network is a model with the project's parameters: each node dials until it
  has 16 peers (`[p2p] target_peers`); GossipSub meshes of degree 6 (4 to
  12) with gossip to 6 peers outside the mesh for 5 heartbeats of 1 s
  (p2p/_gossip.py); Kademlia with k = 20 and alpha = 10 (py-libp2p's);
  registry anti-entropy as node/_registry.py does it (a node that learnt
  something asks its other peers, who pull from it); links of 20-120 ms (a
  WAN). The messages are real: an agent card signed by `AgentCard` and a
  registry update signed by `FeedWriter`, whose sizes and verification costs
  are measured here, on this machine.

Measured by the model, per N: registry propagation (time until every node holds
a new update: p50, p99, max over nodes; hops), convergence after a partition
(two halves each publish updates apart, one link heals them), DHT lookup hops
(mean, p99, and whether the lookup found the true closest node), and the gossip
load on each node (messages, bytes and CPU per second) when every node serves
an agent (a card every 30 s, `[serve] heartbeat_s`) and publishes one registry
update an hour.

``limits_first`` says which part gives out first as N grows, with the numbers.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import heapq
import json
import logging
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

TARGET_PEERS = 16
MAX_CONNECTIONS = 128
D, D_LOW, D_HIGH, D_LAZY = 6, 4, 12, 6
HEARTBEAT_S = 1.0
GOSSIP_WINDOW = 5
K, ALPHA = 20, 10
LINK_MS = (20.0, 120.0)
CARD_EVERY_S = 30.0
UPDATES_PER_NODE_PER_S = 1 / 3600
MIN_PULL_GAP_S = 1.0
LINK_BYTES_PER_S = 10e6 / 8  # a 10 Mbit/s uplink, for anti-entropy transfers
IHAVE_BYTES = 48  # one message id in an IHAVE, with framing
HOME_UPLINK_BYTES_S = 20e6 / 8  # a 20 Mbit/s home uplink, for limits_first
FIT_UP_TO = 200  # the extension to 10,000 starts from the sizes real nodes reach


# -- the real messages: sizes and costs -------------------------------------------


def real_messages() -> dict[str, Any]:
    """Sizes and verification costs of real, signed messages, measured here."""
    from mercato.crdt import FeedWriter, Registry, validate_listing
    from mercato.node.tasks._cards import AgentCard
    from mercato.p2p import Keypair

    key = Keypair.generate()
    card = AgentCard(
        provider=key.peer_id,
        seq=1,
        expires=time.time() + 90,
        agents=["8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount"],
        prices=[10_000_000],
        load=0.5,
        addrs=[f"/ip4/203.0.113.7/tcp/4001/p2p/{key.peer_id}"],
        wallet="8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB",
    ).sign(key)
    card_s = _per_call(lambda: AgentCard.verify(card))

    writer = FeedWriter(Keypair.generate(), Registry())
    listing = validate_listing(
        {
            "name": "wordcount",
            "kind": "agent",
            "title": "Word count",
            "summary": "Counts the words of a text.",
            "description": "Counts words, lines and bytes. " * 4,
            "tags": ["text"],
            "capabilities": ["text.stats"],
            "price": 10_000_000,
            "royalty_bps": 1000,
        }
    )
    update = writer.put_listing(listing).encode()
    update_s = _update_cost()
    return {
        "gossip_envelope_bytes": _envelope_bytes(key),
        "card_bytes": len(card),
        "card_verify_ms": round(card_s * 1000, 4),
        "update_bytes": len(update),
        "update_apply_ms": round(update_s * 1000, 4),
    }


def _envelope_bytes(key: Any) -> int:
    """What GossipSub adds to each message: py-libp2p's signed RPC envelope (sender,
    sequence number, topic, signature, public key), with its framing."""
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.id import ID
    from libp2p.pubsub.pb import rpc_pb2

    pair = create_new_key_pair(key.seed)
    message = rpc_pb2.Message(
        from_id=ID.from_pubkey(pair.public_key).to_bytes(),
        seqno=(2**63).to_bytes(8, "big"),
        topicIDs=["mercato/cards/1"],
        signature=b"s" * 64,
        key=pair.public_key.serialize(),
    )
    rpc = rpc_pb2.RPC(publish=[message])
    return rpc.ByteSize() + 4  # and its varint length prefix, at most


def _per_call(fn: Any, runs: int = 300) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - started) / runs


def _update_cost(count: int = 300) -> float:
    """Seconds to decode, verify and apply one signed registry update (in memory)."""
    from mercato.crdt import FeedWriter, Registry, SignedUpdate, validate_listing
    from mercato.p2p import Keypair

    writer = FeedWriter(Keypair.generate(), Registry())
    encoded = []
    for i in range(count):
        listing = validate_listing(
            {"name": f"agent-{i}", "kind": "agent", "title": f"Agent {i}", "summary": "x",
             "price": i, "royalty_bps": 0}
        )  # fmt: skip
        encoded.append(writer.put_listing(listing).encode())
    replica = Registry()
    started = time.perf_counter()
    for data in encoded:
        replica.apply(SignedUpdate.decode(data))
    return (time.perf_counter() - started) / count


# -- the model network ------------------------------------------------------------


@dataclass
class Net:
    n: int
    rng: random.Random
    peers: list[set[int]] = field(default_factory=list)
    mesh: list[set[int]] = field(default_factory=list)
    latency: dict[tuple[int, int], float] = field(default_factory=dict)

    def link_s(self, a: int, b: int) -> float:
        key = (a, b) if a < b else (b, a)
        if key not in self.latency:
            self.latency[key] = self.rng.uniform(*LINK_MS) / 1000
        return self.latency[key]


def build_net(n: int, seed: int) -> Net:
    """Each node dials random others until it has TARGET_PEERS (none past
    MAX_CONNECTIONS), then grafts a mesh of degree D (accepted up to D_HIGH)."""
    rng = random.Random(seed)
    net = Net(n, rng, [set() for _ in range(n)], [set() for _ in range(n)])
    for a in rng.sample(range(n), n):
        tries = 0
        while len(net.peers[a]) < min(TARGET_PEERS, n - 1) and tries < 200:
            tries += 1
            b = rng.randrange(n)
            if b != a and len(net.peers[b]) < MAX_CONNECTIONS:
                net.peers[a].add(b)
                net.peers[b].add(a)
    for a in rng.sample(range(n), n):
        for b in rng.sample(sorted(net.peers[a]), len(net.peers[a])):
            if len(net.mesh[a]) >= D:
                break
            if len(net.mesh[b]) < D_HIGH:
                net.mesh[a].add(b)
                net.mesh[b].add(a)
    return net


def propagate(net: Net, origin: int, process_s: float) -> dict[str, Any]:
    """One message published at ``origin`` at t = 0: mesh forwarding plus IHAVE
    gossip (a node that lacks an advertised message asks for it, one round trip).
    Returns when each node first held it, its hop count, and every transmission."""
    first: dict[int, float] = {origin: 0.0}
    hops: dict[int, int] = {origin: 0}
    sent = {"full": 0, "ihave": 0}
    events: list[tuple[float, int, int, int]] = []  # (time, node, from, hops)

    def forward(node: int, t: float, came_from: int) -> None:
        for peer in net.mesh[node]:
            if peer != came_from:
                sent["full"] += 1
                heapq.heappush(events, (t + net.link_s(node, peer), peer, node, hops[node] + 1))
        # Each heartbeat within the window, IHAVE to D_LAZY peers outside the mesh.
        phase = net.rng.random() * HEARTBEAT_S
        others = sorted(net.peers[node] - net.mesh[node] - {came_from})
        for beat in range(GOSSIP_WINDOW):
            at = t + phase + beat * HEARTBEAT_S
            for peer in net.rng.sample(others, min(D_LAZY, len(others))):
                sent["ihave"] += 1
                rtt = 2 * net.link_s(node, peer)
                # The peer asks (IWANT) only if it still lacks it when the IHAVE arrives.
                heapq.heappush(events, (at + net.link_s(node, peer) + rtt, peer, -node - 1, 0))

    forward(origin, 0.0, -1)
    while events:
        t, node, sender, hop = heapq.heappop(events)
        if node in first:
            continue
        if sender < 0:  # an IWANT answered (the node still lacked the message)
            src = -sender - 1
            sent["full"] += 1
            hop = hops[src] + 1
            sender = src
        first[node] = t + process_s
        hops[node] = hop
        forward(node, first[node], sender)
    return {"first": first, "hops": hops, "sent": sent}


def converge(net: Net, updates: int, update_bytes: int, apply_s: float) -> float:
    """Seconds until every node holds both halves' updates after one link heals a
    partition: each half holds its own ``updates``; a node that learnt the other
    half's asks its other peers, who pull from it (pages of update_bytes each)."""
    half = set(range(net.n // 2))
    a = net.rng.choice(sorted(half))
    b = net.rng.choice(sorted(set(range(net.n)) - half))
    peers = [set(p) for p in net.peers]
    for x, y in ((a, b), (b, a)):
        peers[x].add(y)
    transfer = updates * update_bytes / LINK_BYTES_PER_S + updates * apply_s
    # has[node] = set of halves held; the heal: a and b pull from each other.
    done: dict[tuple[int, int], float] = {}
    events = [(2 * net.link_s(a, b) + transfer, a, 1), (2 * net.link_s(a, b) + transfer, b, 0)]
    while events:
        t, node, side = heapq.heappop(events)
        if (node, side) in done:
            continue
        done[(node, side)] = t
        for peer in peers[node]:
            if (peer, side) in done:
                continue
            # node asks peer (one way), peer pulls from node (a round trip) and applies.
            arrive = t + 3 * net.link_s(node, peer) + transfer
            heapq.heappush(events, (arrive, peer, side))
    missing = [(x, s) for x in range(net.n) for s in (0, 1) if (x in half) != (s == 0)]
    return max(done.get(m, math.inf) for m in missing)


# -- Kademlia ---------------------------------------------------------------------


def dht_lookups(n: int, lookups: int, seed: int) -> dict[str, Any]:
    """Iterative lookups of random keys in a Kademlia of n nodes: hops (rounds of
    ALPHA queries) until the K closest known have all answered."""
    rng = random.Random(seed)
    ids = sorted(int.from_bytes(hashlib.sha256(f"{seed}-{i}".encode()).digest()) for i in range(n))
    tables = [_table(ids, x, rng) for x in ids]
    index = {x: i for i, x in enumerate(ids)}
    hop_counts, found = [], 0
    for _ in range(lookups):
        target = rng.getrandbits(256)
        start = rng.choice(ids)
        known = {x: False for x in _closest(tables[index[start]], target)}
        rounds = 0
        while True:
            best = sorted(known, key=lambda x: x ^ target)[:K]
            ask = [x for x in best if not known[x]][:ALPHA]
            if not ask:
                break
            rounds += 1
            for x in ask:
                known[x] = True
                for y in _closest(tables[index[x]], target):
                    known.setdefault(y, False)
        hop_counts.append(rounds)
        true_closest = min(ids, key=lambda x: x ^ target)
        found += min(known, key=lambda x: x ^ target) == true_closest
    hop_counts.sort()
    return {
        "hops_mean": round(statistics.mean(hop_counts), 2),
        "hops_p99": hop_counts[min(len(hop_counts) - 1, int(0.99 * len(hop_counts)))],
        "found_closest": round(found / lookups, 3),
    }


def _table(ids: list[int], me: int, rng: random.Random) -> list[int]:
    """Up to K random nodes from each bucket of ``me`` (nodes sharing exactly i
    leading bits with it form one contiguous run of the sorted ids)."""
    out = []
    for i in range(256):
        bit = 255 - i
        prefix = (me >> (bit + 1)) << (bit + 1)
        other = prefix | ((~me) & (1 << bit))
        lo = bisect.bisect_left(ids, other)
        hi = bisect.bisect_left(ids, other + (1 << bit))
        if hi > lo:
            span = range(lo, hi)
            out += [ids[j] for j in (span if hi - lo <= K else rng.sample(span, K))]
    return out


def _closest(table: list[int], target: int) -> list[int]:
    return sorted(table, key=lambda x: x ^ target)[:K]


# -- one size ---------------------------------------------------------------------


def model_at(n: int, msgs: dict[str, Any], seed: int, updates: int) -> dict[str, Any]:
    net = build_net(n, seed)
    process_s = msgs["update_apply_ms"] / 1000
    times, hop_max, full, ihave = [], 0, 0, 0
    runs = 3
    for _ in range(runs):
        result = propagate(net, net.rng.randrange(n), process_s)
        delivered = len(result["first"])
        times.append(sorted(result["first"].values()))
        hop_max = max(hop_max, max(result["hops"].values()))
        full += result["sent"]["full"]
        ihave += result["sent"]["ihave"]
        assert delivered == n, f"a message reached {delivered} of {n} nodes"
    arrivals = [t for run in times for t in run]
    arrivals.sort()
    copies_per_node = full / runs / n  # first copy plus duplicates, per message
    ihaves_per_node = ihave / runs / n
    publish_rate = n * (1 / CARD_EVERY_S + UPDATES_PER_NODE_PER_S)  # network-wide, per s
    msgs_in = publish_rate * copies_per_node
    card = msgs["card_bytes"] + msgs["gossip_envelope_bytes"]
    bytes_in = publish_rate * (copies_per_node * card + ihaves_per_node * IHAVE_BYTES)
    cpu = publish_rate * msgs["card_verify_ms"] / 1000  # each first copy is verified
    return {
        "n": n,
        "mean_degree": round(sum(len(p) for p in net.peers) / n, 1),
        "propagation_s": {
            "p50": round(_pct(arrivals, 0.5), 3),
            "p99": round(_pct(arrivals, 0.99), 3),
            "max": round(arrivals[-1], 3),
            "max_hops": hop_max,
        },
        "converge_s": round(converge(net, updates, msgs["update_bytes"], process_s), 2),
        "dht": dht_lookups(n, 200 if n <= 2000 else 60, seed),
        "gossip_per_node": {
            "copies_per_message": round(copies_per_node, 2),
            "messages_in_per_s": round(msgs_in, 1),
            "kbytes_in_per_s": round(bytes_in / 1000, 1),
            "cpu_share": round(cpu, 4),
        },
    }


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- real overlays ----------------------------------------------------------------


def real_at(n: int) -> dict[str, Any]:
    """n real overlays in one fresh process (nothing left over from another size):
    gossip delivery, DHT lookups, memory, CPU."""
    import subprocess

    done = subprocess.run(
        [sys.executable, __file__, "--real-one", str(n)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        return {"n": n, "error": done.stderr.strip()[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _real(n: int) -> dict[str, Any]:
    import trio
    from benchmarks._net import median, network, percentile
    from benchmarks.dht import _local_keys

    from mercato.p2p import Keypair, make_record

    rss0 = _rss_kb()
    topic = "mercato/sim/1"
    sent: dict[bytes, float] = {}
    got: list[float] = []

    async def arrived(message: Any) -> None:
        if message.data in sent:
            got.append((time.perf_counter() - sent[message.data]) * 1000)

    logging.getLogger("libp2p").setLevel(logging.WARNING)
    async with network(n) as nodes:
        for node in nodes:
            await node.gossip.subscribe(topic, arrived)
        with trio.move_on_after(60):
            while any(len(x.gossip.mesh_peers(topic)) < min(2, n - 1) for x in nodes):  # noqa: ASYNC110
                await trio.sleep(0.2)
        rss = _rss_kb()
        cpu0, wall0 = time.process_time(), time.monotonic()
        await trio.sleep(5.0)  # an idle window: what heartbeats and keep-alives cost
        idle_cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0) / n
        rng = random.Random(5)
        messages = 20
        cpu1, wall1 = time.process_time(), time.monotonic()
        for i in range(messages):
            data = f"sim-{i}-".encode() + b"x" * 1000
            sent[data] = time.perf_counter()
            await rng.choice(nodes).gossip.publish(topic, data)
            await trio.sleep(0.1)  # 10 messages a second, as the gossip benchmark
        with trio.move_on_after(15):
            while len(got) < messages * (n - 1):  # noqa: ASYNC110
                await trio.sleep(0.1)
        delivered = len(got) / (messages * (n - 1))
        # Less what the nodes spend idle over the same time (heartbeats, keep-alives).
        busy = time.process_time() - cpu1 - idle_cpu * n * (time.monotonic() - wall1)
        lookups = []
        for _ in range(10):
            owner = Keypair.generate()
            await rng.choice(nodes).dht.put(make_record(owner, "card", b"x" * 200, ttl_s=600))
            key = f"/mercato/{owner.address}/card"
            readers = [x for x in nodes if key not in _local_keys(x)]  # a real lookup
            started = time.perf_counter()
            with trio.move_on_after(10):
                await rng.choice(readers or nodes).dht.get(owner.address, "card")
            lookups.append((time.perf_counter() - started) * 1000)
    return {
        "n": n,
        "gossip_p50_ms": round(median(got), 1),
        "gossip_p99_ms": round(percentile(got, 0.99), 1),
        "delivered": round(delivered, 4),
        "dht_lookup_p50_ms": round(median(lookups), 1),
        "rss_mb_per_node": round((rss - rss0) / 1024 / n, 2),
        "idle_cpu_share_per_node": round(idle_cpu, 4),
        # CPU of the whole process while gossiping, per message a node received
        # (its duplicates, Noise, Yamux and GossipSub included).
        "cpu_ms_per_delivery": round(busy * 1000 / max(len(got), 1), 3),
    }


# -- curve and extrapolation ------------------------------------------------------


def fit(points: list[tuple[int, float]], kind: str) -> dict[str, float]:
    """Least squares of y on log2(n) (``log``) or on n (``linear``)."""
    xs = [math.log2(n) if kind == "log" else float(n) for n, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    var = sum((x - mx) ** 2 for x in xs) or 1.0
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    return {"slope": slope, "intercept": my - slope * mx}


def at(model: dict[str, float], n: int, kind: str) -> float:
    x = math.log2(n) if kind == "log" else n
    return model["intercept"] + model["slope"] * x


def extrapolate(curve: list[dict[str, Any]], to: int) -> dict[str, Any]:
    series = {
        "propagation_p99_s": ([(r["n"], r["propagation_s"]["p99"]) for r in curve], "log"),
        "converge_s": ([(r["n"], r["converge_s"]) for r in curve], "log"),
        "dht_hops_mean": ([(r["n"], r["dht"]["hops_mean"]) for r in curve], "log"),
        "messages_in_per_s": (
            [(r["n"], r["gossip_per_node"]["messages_in_per_s"]) for r in curve],
            "linear",
        ),
        "kbytes_in_per_s": (
            [(r["n"], r["gossip_per_node"]["kbytes_in_per_s"]) for r in curve],
            "linear",
        ),
        "cpu_share": ([(r["n"], r["gossip_per_node"]["cpu_share"]) for r in curve], "linear"),
    }
    out: dict[str, Any] = {"n": to}
    for name, (points, kind) in series.items():
        out[name] = round(at(fit(points, kind), to, kind), 3)
        out[f"{name}_grows"] = "with log N" if kind == "log" else "with N"
    return out


def limits(
    at_n: dict[str, Any], msgs: dict[str, Any], per_delivery_ms: float | None
) -> dict[str, Any]:
    """Which part gives out first as N grows, and at about what N: a node's link
    (the bytes of every card, with duplicates) or its CPU (a real node's cost per
    message received, measured on real overlays, plus verifying the card)."""
    rate_per_node = 1 / CARD_EVERY_S + UPDATES_PER_NODE_PER_S  # first copies, per node in N
    bytes_per_node = at_n["kbytes_in_per_s"] * 1000 / at_n["n"]
    n_link = int(HOME_UPLINK_BYTES_S / bytes_per_node)
    cost_ms = (per_delivery_ms or 0.0) + msgs["card_verify_ms"]
    n_cpu = int(1 / (rate_per_node * cost_ms / 1000))
    link = f"a {HOME_UPLINK_BYTES_S * 8 / 1e6:.0f} Mbit/s link"
    cpu = f"one core of this machine ({cost_ms:.2f} ms per message received)"
    first, second = sorted([(n_cpu, cpu), (n_link, link)])
    return {
        "part": "agent-card gossip",
        "why": (
            f"every node receives every card: with every node serving and re-announcing "
            f"every {CARD_EVERY_S:.0f} s, a node at N = {at_n['n']:,} takes in about "
            f"{at_n['messages_in_per_s']:,.0f} messages ({at_n['kbytes_in_per_s'] / 1000:,.1f} "
            f"MB) a second with duplicates, "
            f"{msgs['card_bytes'] + msgs['gossip_envelope_bytes']} bytes each with GossipSub's "
            f"envelope. That fills {first[1]} at about N = {first[0]:,}, and {second[1]} at "
            f"about N = {second[0]:,}. Propagation, convergence and DHT lookups grow with "
            "log N and stay under a few seconds."
        ),
        "n_at_cpu_limit": n_cpu,
        "n_at_link_limit": n_link,
        "fix": "announce cards to the DHT under each agent's key and gossip only changes, "
        "or one card topic per agent: a node's load then grows with the agents it follows",
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="25,50,100,200,500,1000,2000,5000,10000")
    parser.add_argument("--real-sizes", default="10,25,50,100")
    parser.add_argument("--real-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--updates", type=int, default=1000, help="per side, for convergence")
    parser.add_argument("--quick", action="store_true", help="small sizes only (a test)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    if args.real_one:
        import trio

        print(json.dumps(trio.run(_real, args.real_one)))
        return 0
    if args.quick:
        args.sizes, args.real_sizes, args.updates = "25,50,100", "8", 100
    started = time.monotonic()
    msgs = real_messages()
    curve = [model_at(int(n), msgs, seed=11, updates=args.updates) for n in args.sizes.split(",")]
    real = [real_at(int(n)) for n in args.real_sizes.split(",") if n]
    # The curve up to what one machine holds as real nodes, extended to 10,000; the
    # model's own run at 10,000 (when asked for) checks the extension.
    at_10k = extrapolate([r for r in curve if r["n"] <= FIT_UP_TO], 10_000)
    # A real node's CPU per message received, from sizes one process kept up with.
    real_cost = [
        r["cpu_ms_per_delivery"]
        for r in real
        if r.get("delivered") == 1.0 and r["gossip_p99_ms"] < 1000
    ]
    if real_cost:
        per_delivery = statistics.median(real_cost)
        at_10k["cpu_share_real_node"] = round(
            10_000 * (1 / CARD_EVERY_S + UPDATES_PER_NODE_PER_S) * per_delivery / 1000
            + at_10k["cpu_share"],
            3,
        )
    from bench import machine

    result = {
        "simulation": "network growth",
        "messages": msgs,
        "model": {
            "parameters": {
                "target_peers": TARGET_PEERS,
                "mesh_degree": [D_LOW, D, D_HIGH],
                "gossip": {"peers": D_LAZY, "heartbeats": GOSSIP_WINDOW, "heartbeat_s": 1.0},
                "kademlia": {"k": K, "alpha": ALPHA},
                "link_ms": list(LINK_MS),
                "card_every_s": CARD_EVERY_S,
                "updates_per_node_per_hour": 1,
                "convergence_updates_per_side": args.updates,
            },
            "curve": curve,
        },
        "real": real,
        "extrapolated_10000": at_10k,
        "modelled_10000": next((r for r in curve if r["n"] == 10_000), None),
        "limits_first": limits(at_10k, msgs, statistics.median(real_cost) if real_cost else None),
        "seconds": round(time.monotonic() - started, 1),
        "machine": machine(),
    }
    text = json.dumps(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
