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
    help="Port to listen on (0 picks a free one; the URL is written to DIR/url).",
)
def localnet(directory: Path | None, host: str, port: int) -> None:
    """Serve one Solana ledger over JSON-RPC for the nodes on this machine.

    It is the embedded ledger (the Solana runtime, LiteSVM) that several node
    processes share, so that they can pay each other: give each node
    `[settlement] ledger = "localnet"` (and `rpc_url` if not the default
    http://127.0.0.1:8899). Its faucet funds their wallets. Balances and
    channels survive a restart. It runs in the foreground until Ctrl-C.

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
