"""The web app over real HTTP on a real node: sign-in, sessions, CSRF, bad
input, escaping. (The browser tests in tests/web drive the same pages in
Chromium.)"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import trio

from mercato.node import ControlClient, Node

from .test_control_api import call


def signed_in(node: Node) -> httpx.Client:
    """A browser-like client holding a session cookie, from a one-time link.
    The caller closes it (the `browser` fixture does)."""
    link = ControlClient(node.datadir).ui_login()["url"]
    client = httpx.Client(follow_redirects=False, timeout=30)
    answer = client.get(link)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    return client


@pytest.fixture
async def browser(node: Node) -> AsyncIterator[httpx.Client]:
    """A signed-in browser-like client of ``node``."""
    client = await call(signed_in, node)
    try:
        yield client
    finally:
        client.close()


def csrf_of(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def test_every_page_answers_a_signed_in_browser(node: Node, browser: httpx.Client) -> None:
    client = browser
    base = node.api_url
    for path in ("/", "/market", "/publish", "/run", "/tasks", "/wallet", "/analytics", "/node"):
        answer = await call(client.get, base + path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "<nav" in answer.text
        assert "default-src 'none'" in answer.headers["content-security-policy"]


def _get(client: httpx.Client, url: str) -> httpx.Response:
    return client.get(url)


async def test_without_a_session_pages_explain_how_to_sign_in_and_show_no_data(
    node: Node,
) -> None:
    base = node.api_url
    with httpx.Client(timeout=30) as anonymous:
        for path in ("/", "/wallet", "/market", "/tasks/" + "0" * 32, "/stream/events"):
            answer = await call(anonymous.get, base + path)
            assert answer.status_code == 401, path
            assert "mercato ui" in answer.text
            assert node.peer_id not in answer.text
        anonymous.cookies.set("mercato_session", "forged")
        forged = await call(anonymous.get, base + "/")
        assert forged.status_code == 403
        assert node.peer_id not in forged.text
        # The API still needs its token: a session cookie is not enough there.
        assert (await call(anonymous.get, base + "/v1/status")).status_code == 401


async def test_a_login_link_works_once(node: Node) -> None:
    link = (await call(ControlClient(node.datadir).ui_login))["url"]
    with httpx.Client(timeout=30) as first, httpx.Client(timeout=30) as second:
        assert (await call(first.get, link)).status_code == 303
        again = await call(second.get, link)
        assert again.status_code == 403
        assert "works once" in again.text
        assert "mercato_session" not in again.headers.get("set-cookie", "")
        cookie = first.cookies["mercato_session"]
        assert (await call(first.get, node.api_url + "/")).status_code == 200
    with httpx.Client(timeout=30) as third:  # a used link stays used
        assert (await call(third.get, link)).status_code == 403
    assert cookie


async def test_the_session_cookie_is_httponly_and_samesite_strict(node: Node) -> None:
    link = (await call(ControlClient(node.datadir).ui_login))["url"]
    with httpx.Client(timeout=30) as browser:
        answer = await call(browser.get, link)
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie


async def test_signing_out_ends_the_session(node: Node, browser: httpx.Client) -> None:
    client = browser
    home = await call(client.get, node.api_url + "/")
    cookie = client.cookies["mercato_session"]
    out = await call(
        lambda: client.post(node.api_url + "/logout", data={"_csrf": csrf_of(home.text)})
    )
    assert out.status_code == 303
    with httpx.Client(timeout=30) as other:
        other.cookies.set("mercato_session", cookie)
        stale = await call(other.get, node.api_url + "/")
    assert stale.status_code == 403


LISTING = {
    "account": "default",
    "name": "shouter",
    "kind": "agent",
    "title": "Shouter <script>alert(1)</script>",
    "summary": "Upper-cases <b>text</b> & more",
    "description": "<img src=x onerror=alert(1)>",
    "price": "0",
    "royalty_bps": "250",
    "tags": "text, demo",
}


async def test_publishing_without_the_csrf_token_is_refused_and_changes_nothing(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    answer = await call(lambda: client.post(node.api_url + "/publish", data=LISTING))
    assert answer.status_code == 403
    wrong = await call(
        lambda: client.post(node.api_url + "/publish", data={**LISTING, "_csrf": "stale"})
    )
    assert wrong.status_code == 403
    other_site = await call(
        lambda: client.post(
            node.api_url + "/publish",
            data={**LISTING, "_csrf": csrf_of((client.get(node.api_url + "/publish")).text)},
            headers={"origin": "http://evil.example"},
        )
    )
    assert other_site.status_code == 403
    assert (await node.api.registry.counts())["listings"] == 0


async def test_a_wrong_field_is_shown_next_to_it_and_nothing_is_published(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    token = csrf_of((await call(client.get, node.api_url + "/publish")).text)
    for field, value, words in (
        ("name", "Not A Slug", "lowercase"),
        ("price", "-5", "whole number"),
        ("royalty_bps", "20000", "basis points"),
        ("links", "ftp://nope", "http"),
    ):
        data = {**LISTING, field: value, "_csrf": token}
        answer = await call(lambda data=data: client.post(node.api_url + "/publish", data=data))
        assert answer.status_code == 400, field
        error = re.search(rf'<span class="field-error" id="e-{field}">([^<]*)</span>', answer.text)
        assert error, (field, answer.text)
        assert words in error.group(1)
        assert f'id="f-{field}"' in answer.text
    assert (await node.api.registry.counts())["listings"] == 0


async def test_listing_text_is_escaped_on_every_page_that_shows_it(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    token = csrf_of((await call(client.get, node.api_url + "/publish")).text)
    published = await call(
        lambda: client.post(node.api_url + "/publish", data={**LISTING, "_csrf": token})
    )
    assert published.status_code == 303
    page = published.headers["location"]
    assert page.startswith("/market/") and page.endswith("/shouter?published=1")
    market = await call(client.get, node.api_url + "/market?text=shouter")
    listing = await call(client.get, node.api_url + page)
    for answer in (market, listing):
        assert answer.status_code == 200
        assert "<script>alert" not in answer.text
        assert "Shouter &lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
    assert "<img src=x" not in listing.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in listing.text


async def test_a_listing_that_does_not_exist_gets_a_404_page(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    missing = "/market/" + "1" * 32 + "/nothing"
    answer = await call(client.get, node.api_url + missing)
    assert answer.status_code == 404
    assert "no such listing" in answer.text
    assert (await call(client.get, node.api_url + "/no/such/page")).status_code == 404


async def test_bad_search_filters_are_named_and_run_no_search(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    answer = await call(client.get, node.api_url + "/market?max_price=cheap&kind=robot")
    assert answer.status_code == 400
    assert 'id="e-max_price"' in answer.text
    assert 'id="e-kind"' in answer.text


async def test_an_oversized_upload_is_refused_before_it_is_stored(
    node: Node, browser: httpx.Client
) -> None:
    client = browser
    token = csrf_of((await call(client.get, node.api_url + "/publish")).text)
    limit = node.config.api.max_upload_mb * 1024 * 1024
    before = (await node.api.builds.stored()).builds
    answer = await call(
        lambda: client.post(
            node.api_url + "/publish/release",
            data={"_csrf": token, "account": "default", "name": "x", "version": "1.0.0"},
            files={"build": ("big.wasm", b"\0" * (limit + 1), "application/wasm")},
        )
    )
    assert answer.status_code == 413
    assert (await node.api.builds.stored()).builds == before


def _job_when_done(client: httpx.Client, url: str, within: float) -> str:
    """The job page once its job has ended, read from its event stream (no polling)."""
    job = url.rsplit("/", 1)[1]
    with client.stream("GET", url.replace("/jobs/", "/stream/jobs/"), timeout=within) as events:
        for line in events.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["state"] != "running":
                break
    page = client.get(url)
    assert page.status_code == 200 and job in url
    return page.text


@pytest.mark.slow
async def test_a_paid_run_from_the_browser_shows_price_output_and_receipt(tmp_path) -> None:
    from mercato.settlement import open_embedded_ledger

    from .test_registry_network import running_nodes
    from .test_tasks import serve_an_agent

    price = 1000
    async with (
        open_embedded_ledger(tmp_path / "ledger.db") as ledger,
        running_nodes(tmp_path, 2, ledger=ledger) as (provider, user),
    ):
        await user.overlay.host.connect(provider.overlay.host.listen_addrs()[0])
        agent = await serve_an_agent(provider, user, price)
        client = await call(signed_in, user)
        try:
            base = user.api_url
            form = await call(client.get, f"{base}/run?agent={agent}")
            assert form.status_code == 200
            quoted = await call(
                lambda: client.post(
                    base + "/run/quote",
                    data={
                        "_csrf": csrf_of(form.text),
                        "agent": agent,
                        "version": "*",
                        "input": "three words here",
                    },
                )
            )
            assert quoted.status_code == 200, quoted.text
            assert "0.000001 SOL" in quoted.text  # the price, before anything is paid
            assert provider.peer_id in quoted.text
            assert (await user.api.tasks.recent()).tasks == []
            draft = re.search(r'name="draft" value="([^"]+)"', quoted.text)
            assert draft
            started = await call(
                lambda: client.post(
                    base + "/run/start", data={"_csrf": csrf_of(quoted.text), "draft": draft[1]}
                )
            )
            assert started.status_code == 303
            page = await call(_job_when_done, client, base + started.headers["location"], 120)
            assert '"words": 3' in page or "&#34;words&#34;: 3" in page, page
            assert "receipt" in page and "Done: paid 0.000001 SOL" in page
            # The confirmation is spent: sending it again runs nothing.
            again = await call(
                lambda: client.post(
                    base + "/run/start", data={"_csrf": csrf_of(quoted.text), "draft": draft[1]}
                )
            )
            assert again.status_code == 409
            assert len((await user.api.tasks.recent(role="user")).tasks) == 1
        finally:
            client.close()


def _first_event(client: httpx.Client, url: str, kind: str, within: float) -> str:
    with client.stream("GET", url, timeout=within) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        for line in events.iter_lines():
            if line.startswith("data: ") and f" · {kind} · " in (
                text := json.loads(line[6:])["text"]
            ):
                return text
    raise AssertionError(f"the stream ended without a {kind} event")


async def test_the_network_page_streams_new_events_as_they_happen(
    node: Node, browser: httpx.Client
) -> None:
    head = (await node.api.node.status()).events.count
    url = f"{node.api_url}/stream/events?after={head}"
    async with trio.open_nursery() as nursery:
        seen: list[str] = []

        async def watch() -> None:
            seen.append(await call(_first_event, browser, url, "key.created", 30))

        nursery.start_soon(watch)
        await node.api.node.keys_new("carol")  # recorded after `head`: the stream has it
    assert '"name": "carol"' in seen[0]
