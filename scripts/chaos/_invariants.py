"""The checks at the end of a chaos run. Each is named, passes or fails, and
carries its evidence; some also give a figure (how long convergence took, how
many lamports are unaccounted for).

They ask the nodes and the ledger themselves: registry digests (GET
/v1/registry/digest), listings, stored builds and channels over each node's
control API (through the probe in its namespace), the channels' transactions
on the ledger (getSignaturesForAddress, getTransaction), and the daemons' logs.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from mercato.settlement import MIN_PAYOUT

from ._cluster import Cluster, ClusterError, wait_until
from ._workload import Workload

CONVERGE_TIMEOUT_S = 120.0
COPIES_TIMEOUT_S = 60.0
REPLICAS = 3  # [builds] replicas, the default the nodes run with
FORWARD_TIMEOUT_S = 60.0
ERROR_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Group)\b.*)$", re.M)  # a traceback's end


@dataclass
class Check:
    name: str
    ok: bool = True
    evidence: list[str] = field(default_factory=list)

    def fail(self, line: str) -> None:
        self.ok = False
        self.evidence.append(line)


def digests(cluster: Cluster) -> dict[int, str]:
    """Each up node's registry digest ("?" where it did not answer)."""
    nodes = cluster.up_nodes()
    with ThreadPoolExecutor(8) as pool:
        answers = pool.map(lambda i: cluster.control(i, "/v1/registry/digest"), nodes)
    return {i: (d["digest"][:16] if ok else "?") for i, (ok, d) in zip(nodes, answers, strict=True)}


def converged(cluster: Cluster, healed_at: float) -> tuple[Check, float | None]:
    """Every up node holds the same registry: the same feeds at the same signed
    updates (equal anti-entropy digests). Returns the check and converge_s, the
    time from ``healed_at`` until they agreed."""
    check = Check("registry: every up node holds the same feeds and signed updates")
    last: dict[int, str] = {}

    def agree() -> bool:
        nonlocal last
        last = digests(cluster)
        return "?" not in last.values() and len(set(last.values())) == 1

    try:
        wait_until(agree, CONVERGE_TIMEOUT_S, "every up node to hold the same registry", 0.5)
    except ClusterError as exc:
        check.fail(f"{exc}; digests: {last}")
        return check, None
    check.evidence.append(f"{len(last)} nodes agree on digest {next(iter(last.values()))}")
    return check, round(time.monotonic() - healed_at, 2)


def acked_writes(cluster: Cluster, workload: Workload) -> tuple[Check, int]:
    """No acknowledged publish or release is missing on any up node."""
    check = Check("writes: every acknowledged publish and release is on every up node")
    wanted: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    for p in workload.publishes:
        wanted[(p["publisher"], p["name"])]
    for r in workload.releases:
        wanted[(r["publisher"], r["name"])].add((r["version"], r["cid"]))
    lost: set[str] = set()
    for i in cluster.up_nodes():
        for (publisher, name), releases in wanted.items():
            ok, shown = cluster.control(i, f"/v1/registry/listings/{publisher}/{name}")
            if not ok:
                lost.add(f"{publisher[:8]}/{name}")
                check.fail(f"node{i} lacks listing {publisher[:8]}/{name}: {shown}")
                continue
            have = {(r["version"], r.get("cid", "")) for r in shown.get("releases", [])}
            for version, cid in sorted(releases - have):
                lost.add(f"{publisher[:8]}/{name}@{version}")
                check.fail(f"node{i} lacks release {name}@{version} -> {cid[:16]}")
    writes = len(workload.publishes) + len(workload.releases)
    if check.ok:
        check.evidence.append(
            f"{writes} acknowledged writes, each on {len(cluster.up_nodes())} nodes"
        )
    return check, len(lost)


def builds(cluster: Cluster, workload: Workload) -> tuple[Check, float]:
    """Every released build is fetched (verified chunk by chunk against its CID) by
    nodes that lacked it, and R copies of it exist again. Returns the fraction of
    those fetches that succeeded."""
    check = Check(
        f"builds: every released build is retrievable, matches its CID, {REPLICAS} copies"
    )
    cids = workload.cids()
    if not cids:
        check.fail("no build was ever released")
        return check, 0.0
    holders: dict[str, list[int]] = {}

    def count() -> bool:
        holders.clear()
        for i in cluster.up_nodes():
            held = workload.held(i) or set()
            for cid in cids:
                if cid in held:
                    holders.setdefault(cid, []).append(i)
        want = min(REPLICAS, len(cluster.up_nodes()))
        return all(len(holders.get(cid, [])) >= want for cid in cids)

    try:
        wait_until(count, COPIES_TIMEOUT_S, f"{REPLICAS} copies of every build", 2)
    except ClusterError:
        for cid in cids:
            check.fail(f"{cid[:20]} held by {holders.get(cid, [])} only")
    ok = tried = 0
    for cid in cids:
        lacking = [i for i in cluster.up_nodes() if i not in holders.get(cid, [])]
        for i in workload.rng.sample(lacking, min(2, len(lacking))):
            tried += 1
            if workload.fetch(i, cid):
                ok += 1
            else:
                check.fail(f"node{i} could not fetch {cid[:20]}: {workload.fetches[-1].detail}")
    check.evidence.append(f"{len(cids)} builds; {ok}/{tried} fetches by nodes that lacked them")
    return check, (ok / tried if tried else 1.0)


def _channels(cluster: Cluster) -> dict[str, dict[str, dict[str, Any]]]:
    """stake -> role ("payer"/"payee") -> that side's book of the channel."""
    books: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for i in cluster.up_nodes():
        ok, listed = cluster.control(i, "/v1/channels")
        if not ok:
            raise ClusterError(f"node{i} did not list its channels: {listed}")
        for c in listed["channels"]:
            books[c["stake"]][c["role"]] = {**c, "node": i}
    return books


def settle(cluster: Cluster) -> list[str]:
    """Close every channel still open (as its payee would): the books and the
    ledger can then be compared to the lamport. Returns what could not close."""
    failed = []
    for stake, sides in _channels(cluster).items():
        payee = sides.get("payee")
        if payee and payee["status"] == "open" and payee["paid"]:
            done = cluster.cli(payee["node"], "channel", "close", stake, timeout=90)
            if done.returncode != 0:
                failed.append(f"{stake[:8]}: {done.stderr.strip()[-200:]}")
    return failed


def _deltas(cluster: Cluster, signature: str) -> dict[str, int] | None:
    """Each account's balance change in a landed transaction, the fee added back to
    its payer (None for a failed one)."""
    tx = cluster.rpc("getTransaction", signature,
                     {"encoding": "json", "maxSupportedTransactionVersion": 0})  # fmt: skip
    meta = tx["meta"]
    if meta["err"] is not None:
        return None
    keys = list(tx["transaction"]["message"]["accountKeys"])
    loaded = meta.get("loadedAddresses") or {}
    keys += [*loaded.get("writable", []), *loaded.get("readonly", [])]
    delta = {k: post - pre for k, pre, post in
             zip(keys, meta["preBalances"], meta["postBalances"], strict=False)}  # fmt: skip
    delta[keys[0]] += meta["fee"]
    return delta


def _gains(cluster: Cluster, stake: str) -> dict[str, int]:
    """Per account, what it gained in the transactions that took lamports out of
    ``stake``: a channel's payouts."""
    gains: dict[str, int] = defaultdict(int)
    for row in cluster.rpc("getSignaturesForAddress", stake, {"limit": 1000}):
        if row.get("err") is not None:
            continue
        delta = _deltas(cluster, row["signature"])
        if delta is None or delta.get(stake, 0) >= 0:
            continue  # the open (or a top-up): lamports went in
        for k, d in delta.items():
            if k != stake:
                gains[k] += d
    return gains


def _payable(settled: dict[str, int], payee: str) -> dict[str, int]:
    """Where a close pays what a state settles: a royalty under MIN_PAYOUT goes to
    the payee, which holds it for its creator (settlement's `payable`)."""
    out: dict[str, int] = defaultdict(int)
    for recipient, amount in settled.items():
        if amount:
            out[recipient if recipient == payee or amount >= MIN_PAYOUT else payee] += amount
    return out


def _channel(stake: str, payee: dict[str, Any], payer: dict[str, Any],
             gains: dict[str, int], check: Check) -> int:  # fmt: skip
    """One channel's books against its transactions; returns the lamports off."""
    lost = 0
    payer_wallet, payee_wallet = payee["payer"], payee["payee"]
    expected = _payable(payee["settled"], payee_wallet)
    for recipient in set(expected) | {k for k in gains if k != payer_wallet}:
        on_ledger, booked = gains.get(recipient, 0), expected.get(recipient, 0)
        if on_ledger != booked:
            lost += abs(on_ledger - booked)
            check.fail(f"{stake[:8]}: {recipient[:8]} got {on_ledger} on the ledger, "
                       f"the payee's book says {booked}")  # fmt: skip
    for recipient, owed in payee["owed"].items():
        signed = payer["owed"].get(recipient, 0)
        if owed > signed:  # the payee holds more than the payer ever signed
            lost += owed - signed
            check.fail(
                f"{stake[:8]}: payee holds {owed} for {recipient[:8]}, payer signed {signed}"
            )
    if payee["status"] == "closed":
        paid_out = sum(v for k, v in gains.items() if k != payer_wallet)
        if payee["settled"] != payee["owed"]:
            lost += abs(sum(payee["owed"].values()) - sum(payee["settled"].values()))
            check.fail(f"{stake[:8]}: closed with owed {payee['owed']} "
                       f"but settled {payee['settled']}")  # fmt: skip
        back = gains.get(payer_wallet, 0)
        if back != payee["deposit"] - paid_out:
            lost += abs(payee["deposit"] - paid_out - back)
            check.fail(f"{stake[:8]}: the payer got {back} back of deposit {payee['deposit']} "
                       f"less {paid_out} paid")  # fmt: skip
    return lost


def _forwarded(cluster: Cluster, wallet: str, stakes: set[str]) -> int:
    """What ``wallet`` paid on to others in transactions that touch no channel: the
    royalties it forwarded (its fees left out)."""
    total = 0
    for row in cluster.rpc("getSignaturesForAddress", wallet, {"limit": 1000}):
        if row.get("err") is not None:
            continue
        delta = _deltas(cluster, row["signature"])
        if delta is None or stakes & set(delta) or delta.get(wallet, 0) >= 0:
            continue
        total += sum(d for k, d in delta.items() if k != wallet and d > 0)
    return total


def royalties(cluster: Cluster, books: dict[str, dict[str, dict[str, Any]]], check: Check) -> int:
    """Every royalty a payee holds for a creator is still held or was forwarded,
    and what its book says it forwarded is what the ledger shows; returns lamports off."""
    held: dict[int, int] = defaultdict(int)
    for sides in books.values():
        payee = sides.get("payee")
        if payee and payee["status"] == "closed":
            kept = _payable(payee["settled"], payee["payee"])[payee["payee"]]
            held[payee["node"]] += kept - payee["settled"].get(payee["payee"], 0)
    lost = 0
    for node, amount in sorted(held.items()):
        info: dict[str, Any] = {}

        def forwarded(node: int = node) -> bool:
            nonlocal info
            ok, wallet = cluster.control(node, "/v1/wallet")
            info = wallet if ok else {}
            return ok and not wallet["held"]["sending"]

        try:
            wait_until(forwarded, FORWARD_TIMEOUT_S, f"node{node}'s royalty forwards", 1)
        except ClusterError as exc:
            check.fail(str(exc))
            continue
        book = info["held"]
        if book["due"] + book["sending"] + book["paid"] != amount:
            lost += abs(book["due"] + book["sending"] + book["paid"] - amount)
            check.fail(f"node{node} holds royalties {book}, its closed channels say {amount}")
        on_ledger = _forwarded(cluster, info["address"], set(books))
        if on_ledger != book["paid"]:
            lost += abs(on_ledger - book["paid"])
            check.fail(
                f"node{node} forwarded {on_ledger} on the ledger, its book says {book['paid']}"
            )
        else:
            check.evidence.append(f"node{node}: {amount} royalties held, {on_ledger} forwarded")
    return lost


def money(cluster: Cluster, workload: Workload) -> tuple[Check, Check, int]:
    """For every channel, the ledger's payouts equal the books (royalties included:
    held by the payee, then forwarded); every receipt a user got is covered by a
    state its payee holds. Returns both checks and the lamports unaccounted for."""
    check = Check("money: each channel's lamports on the ledger equal its books, royalties too")
    receipts = Check("receipts: every receipt is covered by a state its payee holds")
    for line in settle(cluster):
        check.fail(f"close failed: {line}")
    books = _channels(cluster)
    lost = closed = 0
    for stake, sides in sorted(books.items()):
        payee, payer = sides.get("payee"), sides.get("payer")
        gains = _gains(cluster, stake)
        if payee is None and payer is not None and not gains:
            check.evidence.append(f"{stake[:8]}: opened, never paid: the payer refunds it after T")
            continue
        if payee is None or payer is None:
            check.fail(f"{stake[:8]}: only the {next(iter(sides))} holds a book of it")
            continue
        closed += payee["status"] == "closed"
        lost += _channel(stake, payee, payer, gains, check)
        for r in workload.receipts:
            if r["channel"] == stake and r["cumulative"] > payee["paid"]:
                held = payee["paid"]
                receipts.fail(f"node{r['node']} holds a receipt at {r['cumulative']} on "
                              f"{stake[:8]}; its payee holds a state for {held}")  # fmt: skip
    lost += royalties(cluster, books, check)
    for stake in sorted({r["channel"] for r in workload.receipts} - set(books)):
        receipts.fail(f"a receipt names channel {stake[:8]}, which no node knows")
    check.evidence.append(f"{len(books)} channels, {closed} closed; {lost} lamports off")
    receipts.evidence.append(f"{len(workload.receipts)} receipts checked")
    if not books:
        check.fail("no channel was opened: no paid task ran")
    return check, receipts, lost


def logs(cluster: Cluster) -> Check:
    """No daemon (nor the ledger) logged a traceback."""
    check = Check("logs: no daemon log contains a traceback")
    for path in sorted((cluster.dir / "logs").glob("*.log")):
        text = path.read_text(errors="replace")
        count = text.count("Traceback (most recent call last)")
        if count:
            errors = sorted(set(ERROR_LINE.findall(text)))[:3]
            check.fail(f"{path.name}: {count} tracebacks, ending in {'; '.join(errors)}")
    return check
