"""Registry benchmarks on the real store (SQLite file, WAL, synchronous=FULL).

- ingest: signed updates decoded from their wire bytes, verified, applied,
  journaled and indexed per second on one core, in batches of 500 (one
  transaction each), as a node ingests what a sync from a peer brings (gossip
  brings one update per message, and one transaction each); also per second of
  this process's CPU time (``cpu_updates_per_s``), which other load on a shared
  machine and the disk's syncs do not move.
- search: query latency over 100,000 listings (text, filters, sorts), p50/p99.
  Titles and tags come from 21 topic words; descriptions from a 5,000-word
  vocabulary with Zipf frequencies, as real text has; query words are drawn the
  same way, so common words still match a large share of the listings.
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mercato.crdt import (
    FeedWriter,
    Query,
    Registry,
    RegistryStore,
    SignedUpdate,
    validate_listing,
)
from mercato.node import Database, node_database
from mercato.p2p import Keypair

WORDS = [
    "text",
    "image",
    "audio",
    "code",
    "search",
    "summarize",
    "translate",
    "classify",
    "extract",
    "vision",
    "chat",
    "speech",
    "table",
    "math",
    "finance",
    "legal",
    "medical",
    "weather",
    "sports",
    "music",
    "video",
]
BATCH = 500
VOCABULARY = [f"w{i}" for i in range(5000)]
# Zipf-like: word i is about 1/(i+1) as common as the first, as in real text.
ZIPF = [1 / (i + 1) for i in range(len(VOCABULARY))]


def _words(rng: random.Random, n: int) -> list[str]:
    return rng.choices(VOCABULARY, weights=ZIPF, k=n)


def _listing(rng: random.Random, i: int) -> Any:
    words = rng.sample(WORDS, 3)
    fields = {
        "name": f"agent-{i}",
        "kind": rng.choice(["agent", "model"]),
        "title": f"{words[0].title()} {words[1]} agent {i}",
        "summary": f"Does {words[0]} and {words[1]} with {words[2]}.",
        "description": " ".join(_words(rng, 30)),
        "tags": words[:2],
        "capabilities": [f"{words[0]}.{words[2]}"],
        "price": rng.randint(0, 10_000),
        "royalty_bps": rng.randint(0, 2000),
    }
    if fields["kind"] == "model":
        # A model is priced per 1,000 tokens in its [model] table, never per run.
        per_run = fields["price"]
        fields["price"] = 0
        fields["model"] = {
            "family": "llama",
            "parameters": 1_000_000_000 * (1 + i % 70),
            "quantisation": "Q4_K_M",
            "context_length": 8192,
            "input_price": per_run // 10,
            "output_price": per_run // 5,
        }
    return validate_listing(fields)


def _updates(count: int, publishers: int, seed: int = 5) -> list:
    rng = random.Random(seed)
    writers = [FeedWriter(Keypair.generate(), Registry()) for _ in range(publishers)]
    return [writers[i % publishers].put_listing(_listing(rng, i)) for i in range(count)]


def _fresh_store() -> tuple[Database, RegistryStore, Path]:
    root = Path(tempfile.mkdtemp(prefix="mercato-registry-"))
    db = node_database(root / "node.db")
    return db, RegistryStore(db.conn), root


def _ingest(store: RegistryStore, updates: list) -> float:
    return _ingest_timed(store, updates)[0]


def _ingest_timed(store: RegistryStore, updates: list) -> tuple[float, float]:
    """Ingest ``updates`` in batches from their wire bytes, decoded in the timed
    part as a sync from a peer decodes them; (seconds, seconds of this process's CPU)."""
    wire = [u.encode() for u in updates]
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(wire), BATCH):
        batch = [SignedUpdate.decode(data) for data in wire[i : i + BATCH]]
        for outcome in store.ingest_batch(batch):
            if not isinstance(outcome, list):
                raise RuntimeError(f"benchmark update rejected: {outcome}")
    return time.perf_counter() - started, time.process_time() - cpu


def run_ingest(count: int = 20_000) -> dict[str, Any]:
    updates = _updates(count, publishers=200)
    db, store, root = _fresh_store()
    try:
        seconds, cpu_seconds = _ingest_timed(store, updates)
        started = time.perf_counter()
        indexed = store.flush_index()
        index_seconds = time.perf_counter() - started
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "updates": count,
        "updates_per_s": round(count / seconds),
        "cpu_updates_per_s": round(count / cpu_seconds),
        "batch": BATCH,
        "index_listings_per_s": round(indexed / index_seconds),
        "targets": {"updates_per_s": 10_000},
    }


def run_search(listings: int = 100_000, queries: int = 400) -> dict[str, Any]:
    updates = _updates(listings, publishers=1000)
    db, store, root = _fresh_store()
    try:
        _ingest(store, updates)
        store.flush_index()
        rng = random.Random(9)
        times = []
        for _ in range(queries):
            kind = rng.random()
            if kind < 0.4:
                query = Query(text=" ".join(rng.sample(WORDS, 2)))
            elif kind < 0.6:
                query = Query(
                    text=rng.choice(WORDS), max_price=rng.randint(100, 5000), sort="price"
                )
            elif kind < 0.8:
                query = Query(tag=rng.choice(WORDS), kind="agent")
            else:
                query = Query(capability=f"{rng.choice(WORDS)}.{rng.choice(WORDS)}", sort="newest")
            started = time.perf_counter()
            store.search(query)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        db.close()
        shutil.rmtree(root, ignore_errors=True)
    times.sort()
    return {
        "listings": listings,
        "queries": queries,
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[int(0.99 * len(times))], 2),
        "targets": {"p50_ms": 10, "p99_ms": 50},
    }
