"""web: the web app's pages, against a real daemon process, over HTTP on loopback.

The registry is filled before the node starts, straight into the node's own
database file (``DataDir.db_file``): `init_data_dir`, then `node_database` (the
node's schema, which holds the registry's tables) and a `RegistryStore` on its
connection, as the node's registry service opens one on its store. 100,000
signed updates from 1,000 publishers are built as the registry benchmarks build
them (`registry._updates`, in 10 parts of 10,000 from 100 publishers each, built
by 2 worker processes while this one ingests the parts already built) and
ingested with `registry._ingest` (batches of 500, one transaction each).
`RegistryStore.close` then indexes them and marks the index complete, so the
node loads the journal and keeps the index instead of rebuilding it. This is
the node's own ingest path without a running node's round trips; ingesting
through a running node (``node.store.run(node.registry.replica.ingest_batch,
...)``) runs the same code, one batch at a time on the store's thread.

Then one ``mercato node start`` on that data dir (``node_start_s``: until the
API answers, the 100,000 listings loaded). This process is the browser: it
signs in with ``ControlClient(datadir).ui_login()["url"]`` (303 and the session
cookie) and sends every request on one keep-alive connection (``http.client``).

- ``page_p50_ms``/``page_p99_ms``: the server's time for ``GET /market?text=...``,
  read from each answer's ``Server-Timing: app;dur=<ms>`` header, over QUERIES
  text searches after WARM not counted. The text mixes, as the registry search
  benchmark does, topic words (one or two of the 21 words of titles and tags,
  each in about a seventh of the listings) and words of the descriptions'
  vocabulary drawn with the same Zipf frequencies as the descriptions (w0 is
  common, w4000 rare); ``topic_p50_ms`` and ``vocabulary_p50_ms`` split them.
  ``client_p50_ms``/``client_p99_ms`` are the round trips as the client sees
  them (request sent to last byte read). ``listings`` is what the running
  node's registry index holds (read from its database, the query
  `RegistryStore.counts` runs); the first page of a common word is also checked
  to show 20 results and a next page.
- ``page_kb``: the heaviest page's transferred size, HTML plus every asset it
  references (``<link href>``, ``<script src>``, ``<img src>``, ``url()`` in the
  stylesheets, and ``/favicon.ico``, which browsers ask for anyway), each once;
  bytes of the bodies as sent (the request says ``Accept-Encoding: gzip``),
  headers left out. Pages: every page of the nav, with the marketplace as a
  search and one listing's page. ``pages`` lists each with its status and size;
  a page answering other than 200 is listed and not counted in the maximum.
"""

from __future__ import annotations

import http.client
import multiprocessing
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from mercato.crdt import RegistryStore
from mercato.node import ControlClient, DaemonNotRunning, DataDir, init_data_dir, node_database

from .api import ENV, mercato_command
from .registry import WORDS, _ingest, _updates, _words

LISTINGS = 100_000
PARTS = 10  # of LISTINGS // PARTS listings, each from PUBLISHERS // PARTS publishers
PUBLISHERS = 1000
QUERIES = 400
WARM = 20
COMMON = "text"  # a topic word: the marketplace page of page_kb, and the count check
PAGES = ("/", "/market", "/publish", "/run", "/tasks", "/wallet", "/analytics", "/node")
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
TIMING = re.compile(r"app;dur=([0-9.]+)")
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)""")


def _part(k: int) -> list[Any]:
    return _updates(LISTINGS // PARTS, publishers=PUBLISHERS // PARTS, seed=5 + k)


def _parts() -> Iterator[list[Any]]:
    """The parts of the updates in order, built by 2 processes (fork: no thread runs yet)."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        yield from pool.map(_part, range(PARTS))


def _fill(datadir: DataDir) -> None:
    db = node_database(datadir.db_file)
    try:
        store = RegistryStore(db.conn)
        for updates in _parts():
            _ingest(store, updates)
        store.close()  # index everything and mark the index complete
    finally:
        db.close()


def _listings(datadir: DataDir) -> int:
    """Live listings in the node's registry index (what `RegistryStore.counts` reports)."""
    conn = sqlite3.connect(f"file:{datadir.db_file}?mode=ro", uri=True)
    try:
        (count,) = conn.execute(
            "SELECT COUNT(*) - COALESCE(SUM(deprecated), 0) FROM registry_listings"
        ).fetchone()
    finally:
        conn.close()
    return int(count)


def _start(datadir: DataDir, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """`mercato node start` on ``datadir``; back once the API answers, with the seconds it took."""
    client = ControlClient(datadir, timeout=2)
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*mercato_command(), "node", "start", "--data-dir", str(datadir.root)],
            env={**os.environ, **ENV},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}:\n{_tail(log)}")
            if time.monotonic() - started > START_TIMEOUT_S:
                raise RuntimeError(f"the daemon did not answer in time:\n{_tail(log)}")
            try:
                client.health()
                return proc, time.monotonic() - started
            except DaemonNotRunning:
                time.sleep(0.05)
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


class Browser:
    """One keep-alive connection with the session cookie; reconnects if the server closes."""

    def __init__(self, login_url: str) -> None:
        parts = urlsplit(login_url)
        assert parts.hostname is not None and parts.port is not None, login_url
        self.host, self.port = parts.hostname, parts.port
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.cookie = ""
        status, headers, _ = self.get(f"{parts.path}?{parts.query}")
        cookie = headers.get("set-cookie", "")
        if status != 303 or not cookie:
            raise RuntimeError(f"sign-in answered {status} without a session cookie")
        self.cookie = cookie.split(";", 1)[0]

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (lower-case names) and the body as sent."""
        headers = {"Accept-Encoding": "gzip", "Accept": "text/html,*/*"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        for attempt in (1, 2):
            try:
                self.conn.request("GET", path, headers=headers)
                answer = self.conn.getresponse()
                body = answer.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                if attempt == 2:
                    raise
                continue
            if answer.getheader("connection", "").lower() == "close":
                self.conn.close()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _query(rng: random.Random) -> tuple[str, str]:
    """A text query and its kind: topic words (60%) or a vocabulary word (40%)."""
    if rng.random() < 0.6:
        return "topic", " ".join(rng.sample(WORDS, rng.choice((1, 2))))
    return "vocabulary", _words(rng, 1)[0]


def _market(text: str) -> str:
    return "/market?" + urlencode({"text": text})


def _searches(browser: Browser) -> dict[str, Any]:
    rng = random.Random(9)
    server: dict[str, list[float]] = {"topic": [], "vocabulary": []}
    client: list[float] = []
    for i in range(WARM + QUERIES):
        kind, text = _query(rng)
        started = time.perf_counter()
        status, headers, _ = browser.get(_market(text))
        took = (time.perf_counter() - started) * 1000
        timing = TIMING.search(headers.get("server-timing", ""))
        if status != 200 or timing is None:
            timing_header = headers.get("server-timing")
            raise RuntimeError(f"{_market(text)} answered {status} (timing {timing_header!r})")
        if i >= WARM:
            server[kind].append(float(timing.group(1)))
            client.append(took)
    every = sorted(server["topic"] + server["vocabulary"])
    client.sort()
    return {
        "queries": QUERIES,
        "page_p50_ms": round(statistics.median(every), 2),
        "page_p99_ms": round(every[int(0.99 * len(every))], 2),
        "topic_p50_ms": round(statistics.median(server["topic"]), 2),
        "vocabulary_p50_ms": round(statistics.median(server["vocabulary"]), 2),
        "client_p50_ms": round(statistics.median(client), 2),
        "client_p99_ms": round(client[int(0.99 * len(client))], 2),
    }


class _Refs(HTMLParser):
    """What a page makes a browser fetch, and the listings it links to."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.listings: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = {"link": found.get("href"), "script": found.get("src"), "img": found.get("src")}
        if url.get(tag):
            self.assets.append(str(url[tag]))
        href = found.get("href") or ""
        if tag == "a" and href.startswith("/market/") and href.count("/") == 3:
            self.listings.append(href)


def _same_origin(base: str, ref: str) -> str | None:
    """``ref`` as a path on this server, or None (data: URLs and other origins)."""
    url = urlsplit(urljoin(f"http://node{base}", ref.strip()))
    if url.scheme != "http" or url.netloc != "node":
        return None
    return url.path + (f"?{url.query}" if url.query else "")


def _weigh(browser: Browser, path: str, cache: dict[str, tuple[int, bytes]]) -> dict[str, Any]:
    """A page's HTML and every asset it references (each once), as a first visit fetches them."""

    def fetch(target: str) -> tuple[int, bytes]:
        if target not in cache:
            status, _, body = browser.get(target)
            cache[target] = (status, body)
        return cache[target]

    status, _, html = browser.get(path)
    refs = _Refs()
    refs.feed(html.decode("utf-8", errors="replace"))
    pending = [*refs.assets, "/favicon.ico"]
    seen: set[str] = set()
    size, missing = len(html), []
    while pending:
        target = _same_origin(path, pending.pop(0))
        if target is None or target in seen:
            continue
        seen.add(target)
        code, body = fetch(target)
        if code != 200:
            missing.append(target)
            continue
        size += len(body)
        if target.split("?", 1)[0].endswith(".css"):
            css = body.decode("utf-8", errors="replace")
            pending += [urljoin(target, ref) for ref in CSS_URL.findall(css)]
    page: dict[str, Any] = {"page": path, "status": status, "kb": round(size / 1024, 1)}
    page["html_kb"] = round(len(html) / 1024, 1)
    page["assets"] = len(seen) - len(missing)
    if missing:
        page["missing"] = missing
    return page


def _weights(browser: Browser) -> dict[str, Any]:
    status, _, html = browser.get(_market(COMMON))
    refs = _Refs()
    refs.feed(html.decode("utf-8", errors="replace"))
    if status != 200 or not refs.listings:
        raise RuntimeError(f"the marketplace shows no listing for {COMMON!r} ({status})")
    paths = [_market(COMMON) if p == "/market" else p for p in PAGES]
    paths.insert(paths.index(_market(COMMON)) + 1, refs.listings[0])
    cache: dict[str, tuple[int, bytes]] = {}
    pages = [_weigh(browser, p, cache) for p in paths]
    shown = [p for p in pages if p["status"] == 200]
    heaviest = max(shown, key=lambda p: p["kb"]) if shown else {"page": "", "kb": 0.0}
    return {
        "page_kb": heaviest["kb"],
        "page_kb_page": heaviest["page"],
        "pages_not_200": len(pages) - len(shown),
        "pages": pages,
    }


def _check_search(browser: Browser) -> None:
    """The first page of a common word: 20 results and a next page."""
    _, _, html = browser.get(_market(COMMON))
    text = html.decode("utf-8", errors="replace")
    if 'rel="next"' not in text or len(set(re.findall(r'href="/market/[^"/]+/[^"]+"', text))) < 20:
        raise RuntimeError(f"the marketplace's first page for {COMMON!r} is not a full page")


def run() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="mercato-web-"))
    try:
        datadir = DataDir(root / "data")
        init_data_dir(datadir)
        started = time.monotonic()
        _fill(datadir)
        fill_s = time.monotonic() - started
        proc, node_start_s = _start(datadir, root / "daemon.log")
        try:
            listings = _listings(datadir)
            browser = Browser(ControlClient(datadir).ui_login()["url"])
            try:
                _check_search(browser)
                searches = _searches(browser)
                weights = _weights(browser)
            finally:
                browser.close()
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "listings": listings,
        **searches,
        "page_kb": weights.pop("page_kb"),
        **weights,
        "fill_s": round(fill_s, 1),
        "node_start_s": round(node_start_s, 1),
        "targets": {"page_p50_ms": 50, "page_kb": 300},
    }
