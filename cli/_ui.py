"""`mercato ui`: open the node's web app in a browser, signed in."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import click

from mercato.node import ControlClient

from ._common import data_dir_option, print_json, resolve


@click.command("ui")
@data_dir_option
@click.option("--no-browser", is_flag=True, help="Only print the sign-in link; open no browser.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the link as JSON (url, expires_in_s); no browser.",
)
def ui(data_dir: Path | None, no_browser: bool, as_json: bool) -> None:
    """Open the node's web app: network, marketplace, publish, run, tasks, wallet.

    The daemon serves it on its control API's address (loopback only). This
    prints a sign-in link that works once, within five minutes, and opens it
    in your browser; the browser then keeps a session until the daemon
    restarts or you sign out. Run it again for a new link. Needs a running
    daemon (`mercato node start`).

    \b
    Example:
      mercato ui
      mercato ui --no-browser          # on a machine without a browser: copy the link
    """
    link = ControlClient(resolve(data_dir)).ui_login()
    if as_json:
        print_json(link)
        return
    click.echo(f"Sign-in link (works once, for {link['expires_in_s'] // 60} minutes):")
    click.echo(link["url"])
    if not no_browser and not webbrowser.open(link["url"]):
        click.echo("No browser could be opened here: open the link above yourself.", err=True)
