"""The whole story in a browser, on three real daemons sharing a localnet ledger:
a creator publishes and releases an agent from the web app, a user finds it,
runs it, pays and reads the receipt, and the provider closes the channel and
sees on its wallet page what it earned and what went to the creator."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from mercato.node import DataDir

from ..conftest import Daemon, Localnet, budget
from .conftest import WORDCOUNT, OpenPage, check_page, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PRICE = 10_000_000  # 0.01 SOL; its 10 % royalty is above the ledger's smallest payout
ROYALTY_BPS = 1000
ROYALTY = PRICE * ROYALTY_BPS // 10_000
FAUCET = 10 * 10**9  # what the localnet gives each new wallet
WAIT_MS = budget(90) * 1000


def nav(page: Page, label: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=label, exact=True).click()


def until_shown(page: Page, text: str, what: str) -> None:
    """Reload ``page`` until it shows ``text`` (what other nodes learn arrives by
    gossip, and a page shows what its node knows when it is drawn)."""
    deadline_ms = WAIT_MS
    step = 500
    while deadline_ms > 0:
        if page.get_by_text(text, exact=False).count():
            return
        page.wait_for_timeout(step)  # the browser's clock, between reloads of the page
        deadline_ms -= step
        page.reload()
    pytest.fail(f"{what} did not show within {WAIT_MS / 1000:.0f} s")


def publish_in_the_browser(page: Page) -> None:
    nav(page, "Publish")
    form = page.locator("form[action='/publish']")
    form.get_by_label("Name", exact=True).fill("wordcount")
    form.get_by_label("Title").fill("Word count")
    form.get_by_label("Summary").fill("Counts the words of a text, and the lines.")
    form.get_by_label("Price per run (lamports)").fill(str(PRICE))
    form.get_by_label("Royalty (basis points)").fill(str(ROYALTY_BPS))
    form.get_by_label("Tags").fill("text, example")
    form.get_by_role("button", name="Publish listing").click()
    expect(page.get_by_role("status")).to_contain_text("Published")
    check_page(page, "story-published")


def release_in_the_browser(page: Page) -> None:
    nav(page, "Publish")
    form = page.locator("form[action='/publish/release']")
    form.get_by_label("Listing name").fill("wordcount")
    form.get_by_label("Version", exact=True).fill("1.0.0")
    form.get_by_label("Build file").set_input_files(str(WORDCOUNT))
    form.get_by_role("button", name="Release").click()
    expect(page.get_by_text("Released wordcount@1.0.0.")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("ol.steps")).to_contain_text("copies held")
    check_page(page, "story-released")


def run_in_the_browser(page: Page, provider_id: str) -> str:
    """Search, open the listing, run it, pay; returns the task id from the receipt."""
    nav(page, "Marketplace")
    search = page.get_by_role("searchbox", name="Search")
    search.fill("word")
    search.press("Enter")
    page.get_by_role("link", name="Word count").click()
    until_shown(page, provider_id, "the provider's offer at the user's node")
    check_page(page, "story-listing")
    page.get_by_role("link", name="Run this agent").click()
    page.get_by_label("Input", exact=True).fill("three words here")
    page.get_by_role("button", name="Get a quote").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Confirm the run")
    expect(page.locator("main")).to_contain_text("0.01 SOL")
    check_page(page, "story-quote")
    page.get_by_role("button", name="Pay 0.01 SOL and run").click()
    expect(page.get_by_text("Done: paid 0.01 SOL")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#output")).to_contain_text('"words": 3')
    expect(page.locator("#receipt")).to_contain_text(provider_id)
    check_page(page, "story-run")
    task = page.locator("main a[href^='/tasks/']").first.inner_text()
    assert re.fullmatch(r"[0-9a-f]{32}", task)
    return task


def test_publish_release_search_run_pay_and_see_the_earnings(
    tmp_path: Path,
    start_daemon: Callable[..., Daemon],
    start_localnet: Callable[..., Localnet],
    open_page: OpenPage,
) -> None:
    localnet = start_localnet()
    env = {"MERCATO_SETTLEMENT_LEDGER": "localnet", "MERCATO_SETTLEMENT_RPC_URL": localnet.url}
    creator = start_daemon(DataDir(tmp_path / "creator"), env=env)
    publisher = creator.client.keys_show("default")["address"]
    there = creator.client.status()["p2p"]["listen_addrs"][0]
    agent = f"{publisher}/wordcount"
    provider = start_daemon(
        DataDir(tmp_path / "provider"), "--bootstrap", there, "--serve", agent, env=env
    )
    user = start_daemon(DataDir(tmp_path / "user"), "--bootstrap", there, env=env)
    provider_id = provider.client.status()["peer_id"]

    creator_page = open_page()
    sign_in(creator_page, creator)
    publish_in_the_browser(creator_page)
    release_in_the_browser(creator_page)

    user_page = open_page()
    sign_in(user_page, user)
    task = run_in_the_browser(user_page, provider_id)
    user_page.locator(f"main a[href='/tasks/{task}']").click()
    expect(user_page.get_by_role("heading", name="User side")).to_be_visible()
    expect(user_page.locator("main")).to_contain_text("receipt")
    check_page(user_page, "story-task")

    provider_page = open_page()
    sign_in(provider_page, provider)
    nav(provider_page, "Wallet")
    close = provider_page.get_by_role("button", name=re.compile(r"^Close channel "))
    expect(close).to_have_count(1)
    close.click()
    expect(provider_page.get_by_role("status")).to_contain_text("Channel closed")
    per_listing = table_after(provider_page, "Per listing").locator("tbody tr")
    expect(per_listing).to_have_count(1)
    expect(per_listing).to_contain_text(agent)
    expect(per_listing.locator("td[data-label='Income']")).to_have_text("0.01 SOL")
    expect(per_listing.locator('td[data-label="Creator\'s royalty"]')).to_have_text(sol(ROYALTY))
    on_chain = table_after(provider_page, "Settled on chain")
    expect(on_chain.locator("tr", has_text=publisher)).to_contain_text(sol(ROYALTY))
    expect(on_chain.locator("tr", has_text="this node")).to_contain_text(sol(PRICE - ROYALTY))
    check_page(provider_page, "story-earnings")

    # The royalty is on the creator's account on the ledger, and its wallet page says so.
    assert creator.client.wallet()["balance"] == FAUCET + ROYALTY
    nav(creator_page, "Wallet")
    expect(creator_page.locator("#balance")).to_have_text(sol(FAUCET + ROYALTY))


def sol(lamports: int) -> str:
    return f"{lamports / 10**9:g} SOL"


def table_after(page: Page, heading: str) -> Locator:
    """The first table after the heading named ``heading``."""
    return page.locator(f"xpath=//h3[normalize-space()='{heading}']/following::table[1]")
