"""Browser tests of the web app: real daemons, Debian's Chromium driven by Playwright.

Playwright's sync API, in plain ``def test_...`` functions: pytest-trio runs only
async tests in its loop, so no event loop runs while these do (Playwright refuses
to work inside one). The browser is Debian's ``/usr/bin/chromium`` (`.ci/run`
installs it); without it every test that asks for a page skips, saying so (and
fails under CI=true: CI must run them).

What a test gets (fixtures, then helpers to import from ``.conftest``):

- ``browser`` (session): the launched Chromium; ``/usr/bin/chromium`` unless
  MERCATO_TEST_CHROMIUM names another.
- ``open_page(width=1280, height=800, bypass_csp=True)``: a page in a context of
  its own (its own cookies), closed after the test. Its console errors and
  uncaught exceptions are collected by ``page_problems``, and the test fails if
  any appeared, except those it tolerates with ``page_problems.allow(regex)``.
- ``web_daemon``: one `mercato node start` on a fresh data dir (embedded ledger,
  a funded wallet, releases bound without other peers: ``LONE_NODE_ENV``).
- ``check_page(page, name)``: a full-page screenshot in
  ``tests/web/screenshots/<name>.png``, then no console error so far on that
  page and no axe-core violation of impact serious or critical.
- ``sign_in(page, daemon)``, ``login_link(daemon)``, ``base_url(daemon)``: for
  any daemon of ``start_daemon``, so tests with several nodes (on a localnet)
  use them too; ``publish_wordcount(daemon, directory)`` publishes and releases
  the example agent as `mercato publish` and `mercato release` do.
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from mercato.node import DataDir

from ..conftest import Daemon, api_info, run_cli

HERE = Path(__file__).parent
SCREENSHOTS = HERE / "screenshots"
AXE = HERE / "vendor" / "axe.min.js"
CHROMIUM = Path(os.environ.get("MERCATO_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # Without these Chromium dials out to Google's services in the background,
    # which this machine's closed network refuses.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FAILING_IMPACTS = ("serious", "critical")
NAV = (
    ("/", "Network"),
    ("/market", "Marketplace"),
    ("/publish", "Publish"),
    ("/run", "Run"),
    ("/tasks", "Tasks"),
    ("/wallet", "Wallet"),
    ("/analytics", "Analytics"),
    ("/node", "Node"),
)
"""The navigation of ``node/web/_app.py``, as a person sees it: path and link text."""


# -- the browser ------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, for the whole session; skips if it is absent."""
    if not CHROMIUM.is_file():
        why = (
            f"no Chromium at {CHROMIUM}: the browser tests need Debian's package "
            "(apt-get install chromium; .ci/run installs it)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why + "; on CI they must run", pytrace=False)
        pytest.skip(why)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            yield launched
        finally:
            launched.close()


# -- console errors and uncaught exceptions -------------------------------------------


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions of the pages a test watches."""

    seen: list[tuple[Page, str]] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def watch(self, page: Page) -> Page:
        _watchers[page] = self
        page.on("console", lambda message: self._console(page, message))
        page.on("pageerror", lambda exc: self._add(page, f"uncaught {exc.name}: {exc.message}"))
        return page

    def allow(self, pattern: str) -> None:
        """Tolerate console errors whose text matches ``pattern`` (a regex, searched)."""
        self.allowed.append(re.compile(pattern))

    def _console(self, page: Page, message: ConsoleMessage) -> None:
        if message.type not in ("error", "assert"):
            return
        if any(p.search(message.text) for p in self.allowed):
            return
        where = message.location.get("url") or page.url
        self._add(page, f"console {message.type} at {where}: {message.text}")

    def _add(self, page: Page, problem: str) -> None:
        self.seen.append((page, f"{problem} (page {page.url})"))

    def of(self, page: Page | None = None) -> list[str]:
        """What was seen on ``page`` (on every page if None)."""
        return [text for seen_on, text in self.seen if page is None or seen_on is page]

    def check(self, page: Page | None = None) -> None:
        """Fail if anything was seen on ``page`` (on any page if None)."""
        found = self.of(page)
        if found:
            pytest.fail("the browser reported:\n  " + "\n  ".join(found), pytrace=False)


_watchers: weakref.WeakKeyDictionary[Page, PageProblems] = weakref.WeakKeyDictionary()


@pytest.fixture
def page_problems() -> PageProblems:
    """The collector of the test's pages; the test fails if it holds anything at its end."""
    return PageProblems()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    result = yield
    # After a passing test body, so that a problem fails the test (not its teardown).
    problems = getattr(item, "funcargs", {}).get("page_problems")
    if isinstance(problems, PageProblems):
        problems.check()
    return result


class OpenPage(Protocol):
    def __call__(
        self, *, width: int = 1280, height: int = 800, bypass_csp: bool = True
    ) -> Page: ...


@pytest.fixture
def open_page(browser: Browser, page_problems: PageProblems) -> Iterator[OpenPage]:
    """Factory: a watched page in a new context (its own cookies), closed after the test.

    ``bypass_csp`` lets `check_page` inject axe-core, which the app's
    Content-Security-Policy would block; pass False to check the pages under
    their real policy (a violation is then a console error)."""
    contexts: list[BrowserContext] = []

    def open_(*, width: int = 1280, height: int = 800, bypass_csp: bool = True) -> Page:
        context = browser.new_context(
            viewport={"width": width, "height": height},
            bypass_csp=bypass_csp,
            locale="en-GB",
            timezone_id="UTC",
            reduced_motion="reduce",
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return page_problems.watch(context.new_page())

    yield open_
    for context in contexts:
        context.close()


# -- accessibility and screenshots ------------------------------------------------------


@dataclass
class Violation:
    """One axe-core rule a page breaks."""

    rule: str
    impact: str
    help: str
    help_url: str
    targets: list[str]

    def __str__(self) -> str:
        shown = ", ".join(self.targets[:8]) + (" ..." if len(self.targets) > 8 else "")
        return f"[{self.impact}] {self.rule}: {self.help} ({self.help_url})\n      at {shown}"


def axe_violations(page: Page) -> list[Violation]:
    """Every axe-core violation on the page as it is now (any impact)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.add_script_tag(content=AXE.read_text())
    found: list[dict[str, Any]] = page.evaluate(
        """async () => {
            const results = await axe.run(document, { resultTypes: ["violations"] });
            return results.violations;
        }"""
    )
    return [
        Violation(
            rule=v["id"],
            impact=v.get("impact") or "unknown",
            help=v["help"],
            help_url=v["helpUrl"],
            targets=[" ".join(map(str, node["target"])) for node in v["nodes"]],
        )
        for v in found
    ]


def check_page(page: Page, name: str) -> list[Violation]:
    """Check the page a person now sees, and keep a picture of it.

    Fails on a console error or uncaught exception so far on this page, and on
    an axe-core violation of impact serious or critical (rule, help, elements).
    Saves a full-page screenshot as ``tests/web/screenshots/<name>.png`` first,
    so a failure has its picture. Returns the lesser violations (moderate,
    minor), for a test that wants them."""
    page.wait_for_load_state("load")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    problems = _watchers.get(page)
    if problems is not None:
        problems.check(page)
    violations = axe_violations(page)
    bad = [v for v in violations if v.impact in FAILING_IMPACTS]
    if bad:
        pytest.fail(
            f"axe-core: {name} ({page.url}) has {len(bad)} serious or critical "
            "violation(s):\n  " + "\n  ".join(map(str, bad)),
            pytrace=False,
        )
    return violations


# -- daemons ------------------------------------------------------------------------


def base_url(daemon: Daemon) -> str:
    """Where the daemon serves its control API, and so the web app: http://127.0.0.1:PORT."""
    url: str = api_info(daemon.datadir)["url"]
    return url.rstrip("/")


def login_link(daemon: Daemon) -> str:
    """A fresh one-time sign-in link, as `mercato ui` gets it (with the API token)."""
    link: str = daemon.client.ui_login()["url"]
    return link


def sign_in(page: Page, daemon: Daemon) -> str:
    """Open a fresh sign-in link in ``page``'s context; returns the link (used now).

    Afterwards the page shows the Network page, signed in (the navigation shows)."""
    link = login_link(daemon)
    page.goto(link)
    assert page.url == base_url(daemon) + "/", f"the link led to {page.url}"
    assert page.get_by_role("navigation", name="Main").is_visible()
    return link


LONE_NODE_ENV = {"MERCATO_BUILDS_MIN_COPIES": "0"}
"""A node with no peers binds a release at once: no other node can hold a copy."""


@pytest.fixture
def web_daemon(tmp_path: Path, start_daemon: Callable[..., Daemon]) -> Daemon:
    """One daemon on a fresh data dir: embedded ledger (a funded wallet), loopback,
    any free ports, and releases bound without copies on other peers."""
    return start_daemon(DataDir(tmp_path / "node"), env=LONE_NODE_ENV)


WORDCOUNT = Path(__file__).parents[2] / "runtime" / "examples" / "wordcount" / "wordcount.wasm"
"""The example agent's build (a WASM module that counts words)."""


def publish_wordcount(
    daemon: Daemon, directory: Path, *, version: str | None = "1.0.0", price: int = 10_000
) -> str:
    """Publish the example agent from ``daemon``'s default account, as `mercato
    publish` does, and release ``version`` of it (None: no release); returns
    ``PUBLISHER/wordcount``. A release needs peers holding a copy, or
    ``LONE_NODE_ENV``."""
    manifest = directory / "MANIFEST.toml"
    manifest.write_text(
        "\n".join(
            [
                'name = "wordcount"',
                'kind = "agent"',
                'title = "Word count"',
                'summary = "Counts the words of a text, and the lines."',
                f"price = {price}",
                "royalty_bps = 1000",
                'tags = ["text", "example"]',
                'capabilities = ["text.stats"]',
                "",
            ]
        )
    )
    where = ("--data-dir", str(daemon.datadir.root))
    published = run_cli("publish", str(manifest), *where, "--json", timeout=60)
    assert published.returncode == 0, published.stderr
    if version is not None:
        released = run_cli("release", "wordcount", version, "--build", str(WORDCOUNT), *where,
                           timeout=90)  # fmt: skip
        assert released.returncode == 0, released.stderr
    publisher: str = json.loads(published.stdout)["publisher"]
    return f"{publisher}/wordcount"
