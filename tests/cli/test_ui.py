"""`mercato ui` against a real daemon: the link it prints or opens signs a browser in."""

import os
import stat
import urllib.error
import urllib.request
from pathlib import Path

from mercato.node import DataDir

from ..conftest import run_cli


def _opens(link: str) -> int:
    """The status a browser sees for ``link``, not following the redirect."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(link, timeout=10)
    except urllib.error.HTTPError as answer:
        return answer.code
    return 200


def test_ui_prints_a_link_that_signs_in_once(datadir: DataDir, start_daemon) -> None:
    start_daemon(datadir)
    shown = run_cli("ui", "--no-browser", "--data-dir", str(datadir.root))
    assert shown.returncode == 0, shown.stderr
    link = shown.stdout.strip().splitlines()[-1]
    assert link.startswith("http://127.0.0.1:") and "/login?code=" in link
    assert _opens(link) == 303
    assert _opens(link) == 403  # used


def test_ui_opens_the_link_in_the_browser(datadir: DataDir, start_daemon, tmp_path: Path) -> None:
    start_daemon(datadir)
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(browser.stat().st_mode | stat.S_IEXEC)
    shown = run_cli(
        "ui", "--data-dir", str(datadir.root), env={**os.environ, "BROWSER": str(browser)}
    )
    assert shown.returncode == 0, shown.stderr
    assert opened.read_text().strip() == shown.stdout.strip().splitlines()[-1]


def test_ui_without_a_daemon_says_how_to_start_one(initialized: DataDir) -> None:
    shown = run_cli("ui", "--no-browser", "--data-dir", str(initialized.root))
    assert shown.returncode == 1
    assert "mercato node start" in shown.stderr
