"""The web app in Chromium, as a person uses it: sign in through the one-time link,
walk the navigation (mouse and keyboard), and on every page no console error, no
serious accessibility violation (axe-core), and a screenshot; narrow screens;
what a browser without a session sees."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from mercato.node import DataDir

from ..conftest import Daemon, wait_for
from .conftest import (
    LONE_NODE_ENV,
    NAV,
    OpenPage,
    PageProblems,
    base_url,
    check_page,
    login_link,
    publish_wordcount,
    sign_in,
)

pytestmark = pytest.mark.browser

SHOTS = {
    "/": "network",
    "/market": "market",
    "/publish": "publish",
    "/run": "run",
    "/tasks": "tasks",
    "/wallet": "wallet",
    "/analytics": "analytics",
    "/node": "node",
}
"""The screenshot's name of each page of the navigation."""
NARROW = 320


def nav_link(page: Page, label: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True)


def expect_on(page: Page, base: str, path: str, label: str) -> None:
    """The page of ``path`` shows, its navigation link marked as the current page."""
    expect(page).to_have_url(base + path)
    expect(nav_link(page, label)).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("heading", level=1)).to_be_visible()


def tab_to(page: Page, name: str, limit: int = 20) -> None:
    """Press Tab until the focused element is the link or button named ``name``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate("() => document.activeElement.textContent.trim()")
        if focused == name:
            return
    pytest.fail(f"{limit} presses of Tab did not reach {name!r}")


def test_a_person_signs_in_and_visits_every_page_through_the_navigation(
    web_daemon: Daemon, open_page: OpenPage, tmp_path: Path
) -> None:
    agent = publish_wordcount(web_daemon, tmp_path)
    base = base_url(web_daemon)
    page = open_page()
    sign_in(page, web_daemon)
    expect_on(page, base, "/", "Network")
    links = page.get_by_role("navigation", name="Main").get_by_role("link")
    assert links.all_inner_texts() == [label for _, label in NAV]
    check_page(page, "network")

    # By keyboard: the first Tab reaches the skip link, more reach the navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    tab_to(page, "Marketplace")
    page.keyboard.press("Enter")
    expect_on(page, base, "/market", "Marketplace")
    expect(page.get_by_role("link", name="Word count")).to_be_visible()
    check_page(page, "market")

    # One listing, from the search results.
    page.get_by_role("link", name="Word count").click()
    expect(page).to_have_url(f"{base}/market/{agent}")
    expect(page.get_by_role("heading", level=1)).to_have_text("Word count")
    expect(page.get_by_role("cell", name="1.0.0", exact=True)).to_be_visible()
    check_page(page, "listing")

    # By mouse: every other page of the navigation, in its order.
    for path, label in NAV[2:]:
        nav_link(page, label).click()
        expect_on(page, base, path, label)
        check_page(page, SHOTS[path])
    nav_link(page, "Network").click()
    expect_on(page, base, "/", "Network")


def test_every_page_keeps_to_its_content_security_policy(
    web_daemon: Daemon, open_page: OpenPage, page_problems: PageProblems, tmp_path: Path
) -> None:
    """Under the real policy (no bypass, so no axe here) a blocked script, style
    or request is a console error: the app's pages cause none."""
    agent = publish_wordcount(web_daemon, tmp_path, version=None)
    base = base_url(web_daemon)
    page = open_page(bypass_csp=False)
    sign_in(page, web_daemon)
    for path in [*(p for p, _ in NAV), f"/market/{agent}", "/market?text=word&sort=price"]:
        answer = page.goto(base + path)
        assert answer is not None and answer.status == 200, path
        page.wait_for_load_state("load")
        page_problems.check(page)
    page.goto(base + "/")
    expect(page.locator("script[src='/static/app.js']")).to_have_count(1)
    assert page.evaluate("() => getComputedStyle(document.body).margin") == "0px"  # the CSS


@pytest.mark.parametrize("path", ["/", "/market"])
def test_the_network_and_marketplace_pages_fit_a_320_px_wide_screen(
    path: str, web_daemon: Daemon, open_page: OpenPage, tmp_path: Path
) -> None:
    publish_wordcount(web_daemon, tmp_path, version=None)  # the market shows a table
    page = open_page(width=NARROW, height=640)
    sign_in(page, web_daemon)
    page.goto(base_url(web_daemon) + path)
    wide = page.evaluate("() => document.documentElement.scrollWidth")
    assert wide <= NARROW, f"{path} is {wide} px wide at {NARROW} px: it scrolls sideways"
    check_page(page, f"narrow-{SHOTS[path]}")


def test_without_a_session_pages_explain_how_to_sign_in_and_show_nothing(
    web_daemon: Daemon, open_page: OpenPage, page_problems: PageProblems, tmp_path: Path
) -> None:
    agent = publish_wordcount(web_daemon, tmp_path, version=None)
    page_problems.allow(r"status of 40[13]")  # the sign-in page's own status
    peer_id = web_daemon.client.status()["peer_id"]
    base = base_url(web_daemon)
    page = open_page()
    for path in [*(p for p, _ in NAV), f"/market/{agent}", "/market?text=word"]:
        answer = page.goto(base + path)
        assert answer is not None and answer.status == 401, path
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
        expect(page.get_by_text("mercato ui", exact=True)).to_be_visible()
        expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
        html = page.content()
        assert peer_id not in html and "Word count" not in html, path
    check_page(page, "signed-out")

    # A forged session cookie is no better: the page says the session ended.
    page.context.add_cookies([{"name": "mercato_session", "value": "forged", "url": base}])
    answer = page.goto(base + "/wallet")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("alert")).to_contain_text("session has ended")
    assert peer_id not in page.content()
    check_page(page, "session-ended")


def test_a_sign_in_link_works_once(
    web_daemon: Daemon, open_page: OpenPage, page_problems: PageProblems
) -> None:
    page_problems.allow(r"status of 40[13]")  # the refusals' own status
    base = base_url(web_daemon)
    first = open_page()
    link = sign_in(first, web_daemon)
    peer_id = web_daemon.client.status()["peer_id"]
    expect(first.get_by_text(peer_id, exact=True)).to_be_visible()

    other = open_page()  # another browser, say one that saw the link
    answer = other.goto(link)
    assert answer is not None and answer.status == 403
    expect(other.get_by_role("alert")).to_contain_text("not valid")
    expect(other.get_by_role("navigation", name="Main")).to_have_count(0)
    assert peer_id not in other.content()
    check_page(other, "link-used")
    answer = other.goto(base + "/")
    assert answer is not None and answer.status == 401  # still not signed in

    # The first browser keeps its session; a fresh link signs the other in.
    first.reload()
    expect(first.get_by_text(peer_id, exact=True)).to_be_visible()
    other.goto(login_link(web_daemon))
    expect(other).to_have_url(base + "/")
    expect(other.get_by_text(peer_id, exact=True)).to_be_visible()


@pytest.mark.slow
def test_pages_with_a_peer_and_a_provider(
    tmp_path: Path,
    start_daemon: Callable[..., Daemon],
    open_page: OpenPage,
) -> None:
    """Two nodes: the Network page lists the peer, the listing its provider; the
    pages stay accessible with their tables filled, also 320 px wide."""
    creator = start_daemon(DataDir(tmp_path / "creator"), env=LONE_NODE_ENV)
    agent = publish_wordcount(creator, tmp_path)
    there = creator.client.status()["p2p"]["listen_addrs"][0]
    provider = start_daemon(DataDir(tmp_path / "provider"), "--bootstrap", there, "--serve", agent)
    provider_id = provider.client.status()["peer_id"]
    wait_for(lambda: creator.client.providers(agent)["providers"], 60, "the provider's card")
    base = base_url(creator)

    page = open_page()
    sign_in(page, creator)
    nav_link(page, "Marketplace").click()
    page.get_by_role("link", name="Word count").click()
    expect(page).to_have_url(f"{base}/market/{agent}")
    expect(page.get_by_role("cell", name=provider_id, exact=True)).to_be_visible()
    check_page(page, "listing-with-provider")
    nav_link(page, "Wallet").click()
    expect(page.get_by_text(creator.client.wallet()["address"], exact=True)).to_be_visible()
    check_page(page, "wallet")
    nav_link(page, "Network").click()
    expect(page.get_by_role("cell", name=provider_id, exact=True)).to_be_visible()
    check_page(page, "network-with-peer")

    narrow = open_page(width=NARROW, height=640)
    sign_in(narrow, creator)
    for path in ("/", f"/market/{agent}"):
        narrow.goto(base + path)
        wide = narrow.evaluate("() => document.documentElement.scrollWidth")
        assert wide <= NARROW, f"{path} is {wide} px wide at {NARROW} px"
    check_page(narrow, "narrow-listing-with-provider")
