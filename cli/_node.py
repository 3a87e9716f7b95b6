from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import click
import trio

from mercato.node import (
    ConfigError,
    ControlClient,
    DaemonNotRunning,
    DataDir,
    DataDirLock,
    DataDirLocked,
    Node,
    NodeError,
    configure_logging,
    init_data_dir,
    load_config,
    lock_holder,
)

from ._common import data_dir_option, print_json, resolve

STOP_TIMEOUT_S = 10.0


@click.group()
def node() -> None:
    """Run and inspect the node daemon.

    \b
    Example:
      mercato node start --data-dir ~/node1
      mercato node status --data-dir ~/node1
      mercato node stop --data-dir ~/node1
    """


@node.command()
@data_dir_option
@click.option("--log-json", is_flag=True, help="Log one JSON object per line instead of text.")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Log level [default: from mercato.toml, else info].",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    metavar="MULTIADDR",
    help="Listen for peers here (repeatable) [default: /ip4/0.0.0.0/tcp/4001].",
)
@click.option(
    "--bootstrap",
    "bootstrap",
    multiple=True,
    metavar="MULTIADDR",
    help="Join the network through this peer, /ip4/HOST/tcp/PORT/p2p/PEER_ID (repeatable).",
)
@click.option("--no-mdns", is_flag=True, help="Do not look for peers on the local network.")
@click.option(
    "--serve",
    "serve",
    multiple=True,
    metavar="PUBLISHER/NAME",
    help="Run this agent for other peers (repeatable; adds to [serve] agents).",
)
@click.option(
    "--api-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Control API port on 127.0.0.1 (0 = any free port).",
)
@click.option(
    "--role",
    type=click.Choice(["full", "relay"]),
    default=None,
    help="full (the default) or relay: a slim public node for a VPS that relays for "
    "peers behind NAT and runs no tasks, builds or wallet.",
)
@click.option(
    "--gateway",
    "gateway",
    default=None,
    metavar="HOST:PORT",
    help="Serve the x402 gateway here, e.g. 0.0.0.0:8402: anyone pays for one run of the "
    "agents this node serves over plain HTTP ([gateway] listen; off by default).",
)
@click.option(
    "--private",
    is_flag=True,
    help="Never be dialed directly: listen on no socket and be reached only through the "
    "relays on the bootstrap list. (Without it a node behind NAT finds out and uses relays.)",
)
def start(
    data_dir: Path | None,
    log_json: bool,
    log_level: str | None,
    listen: tuple[str, ...],
    bootstrap: tuple[str, ...],
    no_mdns: bool,
    serve: tuple[str, ...],
    api_port: int | None,
    role: str | None,
    gateway: str | None,
    private: bool,
) -> None:
    """Run the node in the foreground until SIGINT/SIGTERM or `mercato node stop`.

    Creates the data dir first if it does not exist. Configuration comes from
    <data dir>/mercato.toml, then MERCATO_<SECTION>_<KEY> variables, then these flags.

    \b
    Example:
      mercato node start
      mercato node start --data-dir ~/node2 --api-port 7312 \\
        --listen /ip4/0.0.0.0/tcp/4002 \\
        --bootstrap /ip4/192.0.2.10/tcp/4001/p2p/12D3KooW...
      mercato node start --serve 8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/wordcount
      mercato node start --role relay --listen /ip4/0.0.0.0/tcp/4001
      mercato node start --serve PUBLISHER/NAME --gateway 0.0.0.0:8402
    """
    datadir = resolve(data_dir)
    config = load_config(datadir.config_file)  # a missing file: the defaults
    try:  # a bad flag is a usage error, found before anything is created
        if log_json:
            config = config.replace("log", format="json")
        if log_level:
            config = config.replace("log", level=log_level)
        if api_port is not None:
            config = config.replace("api", port=api_port)
        if listen:
            config = config.replace("p2p", listen=listen)
        if bootstrap:
            config = config.replace("p2p", bootstrap=config.p2p.bootstrap + bootstrap)
        if no_mdns:
            config = config.replace("p2p", mdns=False)
        if serve:
            config = config.replace("serve", agents=config.serve.agents + serve)
        if role:
            config = config.replace("node", role=role)
        if private:
            config = config.replace("p2p", private=True)
        if gateway is not None:
            config = config.replace("gateway", listen=gateway)
    except ConfigError as exc:
        raise click.UsageError(str(exc).removeprefix("command line: ")) from exc
    if not datadir.is_initialized():
        result = init_data_dir(datadir)
        click.echo(f"initialized data dir {result.root}", err=True)
    configure_logging(config.log.level, config.log.format)
    try:
        trio.run(Node(datadir, config, handle_signals=True).run)
    except KeyboardInterrupt as exc:  # Ctrl-C before the signal handler was installed
        raise SystemExit(130) from exc


def _wait_stopped(datadir: DataDir, timeout: float) -> bool:
    """Wait until no process holds the data dir lock (the kernel drops it at exit)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with DataDirLock(datadir):
                return True
        except DataDirLocked:
            time.sleep(0.05)
    return False


@node.command()
@data_dir_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=STOP_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the daemon to exit.",
)
def stop(data_dir: Path | None, timeout: float) -> None:
    """Ask the running daemon to stop, and wait until it has.

    Uses the control API; if the API does not answer but a daemon holds the
    data dir, sends it SIGTERM.

    \b
    Example:
      mercato node stop --data-dir ~/node1
    """
    datadir = resolve(data_dir)
    client = ControlClient(datadir)
    try:
        pid = client.status()["pid"]
        client.shutdown()
    except DaemonNotRunning:
        pid = lock_holder(datadir)  # None unless a live process really holds the lock
        if pid is None:
            raise
        os.kill(pid, signal.SIGTERM)
        click.echo(f"the control API did not answer; sent SIGTERM to pid {pid}", err=True)
    if not _wait_stopped(datadir, timeout):
        raise NodeError(f"the daemon (pid {pid}) did not stop within {timeout:g} s")
    click.echo("stopped")


@node.command("relay-files")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def relay_files(directory: Path) -> None:
    """Write a relay host's deployment files into DIRECTORY.

    The hardened systemd unit, the Containerfile and install.sh that the
    README's "Operating a relay" walks through, as installed with mercato.
    Existing files are never overwritten.

    \b
    Example:
      mercato node relay-files ./relay && sudo bash ./relay/install.sh
    """
    from mercato.bootstrap import deploy_files

    wanted = deploy_files()
    taken = [name for name in wanted if (directory / name).exists()]
    if taken:
        raise NodeError(
            f"{', '.join(taken)} already exist in {directory}; choose an empty directory"
        )
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in wanted.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(0o755 if name.endswith(".sh") else 0o644)
        click.echo(str(directory / name))


def _p2p_rows(p2p: dict | None) -> list[tuple[str, object]]:
    if not p2p:
        return []
    peers = p2p["peers"]
    rows: list[tuple[str, object]] = [
        ("addresses", "\n              ".join(p2p["listen_addrs"]) or "none (not listening)"),
        (
            "peers",
            f"{peers['connected']} connected, {peers['routing_table']} in DHT table, "
            f"{peers['banned']} banned",
        ),
        ("dht", p2p["dht_mode"]),
        ("mdns", "on" if p2p["mdns"] else "off"),
        ("reachable", _reachable(p2p)),
    ]
    for boot in p2p["bootstrap"]:
        state = "connected" if boot["connected"] else f"unreachable ({boot['failures']} tries)"
        rows.append(("bootstrap", f"{boot['addr']} {state}"))
    return rows


def _reachable(p2p: dict) -> str:
    relay = p2p.get("relay") or {}
    how = _how_reached(p2p.get("reachability", "?"), relay, p2p.get("dialback") or {})
    return how + ("; relaying for others" if relay.get("hop") else "")


def _how_reached(how: str, relay: dict, check: dict) -> str:
    n = len(check.get("checked_by", []))
    checked = f"{n} peer" if n == 1 else f"{n} peers"
    seen = ", ".join(check.get("observed", [])) or "?"
    if how == "relayed":
        why = f"; dialed back: {check['state']}" if check.get("state") == "unreachable" else ""
        return "relayed, through " + ", ".join(relay.get("reservations", [])) + why
    if how == "private":
        return "private: no relay reservation yet (only peers it dials reach it)"
    if how == "public":
        return f"public (dialed back by {checked} at {seen})"
    if how == "unreachable":
        hint = "" if relay.get("hop") else "; looking for a relay among its peers"
        return f"unreachable: {checked} could not dial it back at {seen}{hint}"
    if how == "unverified":
        return "not verified yet: no peer has dialed it back"
    return "LAN only (mDNS; no address to dial)"


@node.command()
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@click.option(
    "--addrs",
    is_flag=True,
    help="Print only the addresses other peers dial it on (with its peer id), one per line, "
    "best first: what another node's --bootstrap takes.",
)
def status(data_dir: Path | None, as_json: bool, addrs: bool) -> None:
    """Show what the running daemon is: identity, API, services, event log head.

    \b
    Example:
      mercato node status
      mercato node status --json
      mercato node start --bootstrap $(mercato node status --addrs | head -n 1)
    """
    if as_json and addrs:
        raise click.UsageError("give --json or --addrs, not both")
    info = ControlClient(resolve(data_dir)).status()
    if as_json:
        print_json(info)
        return
    if addrs:
        for addr in (info.get("p2p") or {}).get("listen_addrs", []):
            click.echo(addr)
        return
    rows = [
        ("status", "running"),
        ("role", info.get("role", "full")),
        ("version", info["version"]),
        ("pid", info["pid"]),
        ("peer id", info["peer_id"]),
        ("data dir", info["data_dir"]),
        ("control api", info["api"]),
        ("uptime", f"{info['uptime_s']:.1f} s"),
        *_p2p_rows(info.get("p2p")),
        ("services", ", ".join(info["services"])),
        ("accounts", ", ".join(info["accounts"]) or "none"),
        ("events", f"{info['events']['count']} (head {(info['events']['head'] or '-')[:16]})"),
    ]
    if info.get("name"):
        rows.insert(1, ("name", info["name"]))
    for label, value in rows:
        click.echo(f"{label + ':':<13} {value}")
    for warning in info.get("warnings", []):
        click.echo(f"warning: {warning}", err=True)
