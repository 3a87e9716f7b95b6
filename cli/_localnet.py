"""``mercato localnet``: a shared Solana ledger for the nodes on this machine."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import click
import trio

from mercato.node import (
    LOCALNET_PORT,
    DataDirLocked,
    MercatoError,
    configure_logging,
    default_data_dir,
    serve_localnet,
)


@click.command("localnet")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the ledger is kept [default: mercato-localnet next to the default data dir].",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=LOCALNET_PORT,
    show_default=True,
    help=(
        "Port of the JSON-RPC; subscriptions (WebSocket) are on the next one, as on a "
        "cluster. 0 picks a free pair; the URLs are written to DIR/url and DIR/ws_url."
    ),
)
def localnet(directory: Path | None, host: str, port: int) -> None:
    """Serve one Solana ledger for the nodes, wallets and dapps on this machine.

    It is the Solana runtime (LiteSVM) behind Solana's JSON-RPC and WebSocket
    APIs, so stock clients (web3.js, spl-token, kit, solana-py) work against it
    unchanged, and several node processes share it to pay each other: give each
    node `[settlement] ledger = "localnet"` (and `rpc_url` if not the default
    http://127.0.0.1:8899). Slots advance every 400 ms; blockhashes stay valid
    for 150 slots. Its faucet funds the nodes' wallets (and `requestAirdrop`),
    with 1,000 tokens of its test SPL mint (for x402) each time.
    Balances, channels and transaction history survive a restart. It runs in
    the foreground until Ctrl-C.

    \b
    Example:
      mercato localnet
      mercato localnet --dir /tmp/ledger --port 0
    """
    directory = directory or default_data_dir().parent / "mercato-localnet"
    configure_logging("info")
    try:
        trio.run(partial(serve_localnet, directory, host, port, handle_signals=True))
    except (DataDirLocked, MercatoError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(
            f"the localnet failed ({host}:{port}, {directory}): {exc}"
        ) from exc
    except KeyboardInterrupt:
        pass
