"""The web app over real HTTP on a real node: sign-in, sessions, CSRF, bad
input, escaping. (The browser tests in tests/web drive the same pages in
Chromium.)"""

from __future__ import annotations

import re

import httpx
import trio

from mercato.node import ControlClient, Node

from .test_control_api import call


def signed_in(node: Node) -> httpx.Client:
    """A browser-like client holding a session cookie, from a one-time link."""
    link = ControlClient(node.datadir).ui_login()["url"]
    client = httpx.Client(follow_redirects=False, timeout=30)
    answer = client.get(link)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    return client


def csrf_of(html: str) -> str:
    found = re.search(r'name="_csrf" value="([^"]+)"', html)
    assert found, "the page has no CSRF token"
    return found.group(1)


async def test_every_page_answers_a_signed_in_browser(node: Node) -> None:
    client = await call(signed_in, node)
    base = node.api_url
    for path in ("/", "/market", "/publish", "/run", "/tasks", "/wallet", "/analytics", "/node"):
        answer = await call(client.get, base + path)
        assert answer.status_code == 200, (path, answer.text[:500])
        assert "<nav" in answer.text
        assert "default-src 'none'" in answer.headers["content-security-policy"]
