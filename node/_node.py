"""The daemon: one `Node` composes every service under one trio nursery.

Start order (stop order is the reverse): data dir lock, keys, store and event
log, metrics, control API. Later issues add the p2p host, registry, discovery,
runtime pool and settlement watcher between the store and the control API.

Stopping: SIGINT/SIGTERM (when ``handle_signals``), ``POST /v1/shutdown`` or
`Node.request_stop` all end `Node.run` cleanly: services are cancelled (each
must return promptly when cancelled), ``node.stopped`` is appended to the event
log, the store is closed, api.json removed and the lock released.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from ._api import ControlAPI
from ._config import Config, load_config
from ._control import LocalControl
from ._events import event_head
from ._http import HttpServer
from ._keys import KeyStore
from ._lock import DataDirLock
from ._metrics import NodeMetrics
from ._paths import DataDir
from ._store import Store, open_store
from ._version import __version__

log = logging.getLogger("mercato.node")

SHUTDOWN_GRACE_S = 3.0
"""Time services get to finish what is in flight before they are cancelled."""
T = TypeVar("T")


class Node:
    """A mercato node on one data dir.

    ``config`` defaults to the data dir's mercato.toml plus environment
    overrides. The data dir must be initialized (see `init_data_dir`).
    """

    def __init__(
        self, datadir: DataDir, config: Config | None = None, *, handle_signals: bool = False
    ) -> None:
        self.datadir = datadir
        self.config = config or load_config(datadir.config_file)
        self.metrics = NodeMetrics(__version__)
        self._handle_signals = handle_signals
        self._stop = trio.Event()
        self._started_at = 0.0
        self._store: Store | None = None
        self._control: LocalControl | None = None
        self._api_url = ""
        self._peer_id = ""
        self._warnings: list[str] = []
        self.services: list[str] = []

    # -- used by the control API ------------------------------------------------

    @property
    def control(self) -> LocalControl:
        assert self._control is not None, "node is not running"
        return self._control

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking control operation in the store's worker thread."""
        assert self._store is not None, "node is not running"
        return await self._store.run(fn, *args)

    def request_stop(self, reason: str = "request") -> None:
        """Ask `run` to stop; returns at once. Safe to call more than once."""
        if not self._stop.is_set():
            log.info("stopping", extra={"reason": reason})
            self._stop.set()

    async def status(self) -> dict[str, Any]:
        seq, head = await self.call(event_head, self.control.db)
        accounts = await self.call(self.control.keys.account_names)
        return {
            "version": __version__,
            "name": self.config.node.name,
            "pid": os.getpid(),
            "data_dir": str(self.datadir.root),
            "started_at": self._started_at,
            "uptime_s": round(time.time() - self._started_at, 3),
            "peer_id": self._peer_id,
            "accounts": accounts,
            "api": self._api_url,
            "services": list(self.services),
            "events": {"count": seq, "head": head},
            "warnings": list(self._warnings),
        }

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until asked to stop. Reports the control API's URL once it answers.

        Raises DataDirLocked if another daemon holds the data dir, DataDirError,
        ConfigError, KeyStoreError or StoreError if local state cannot be used;
        in each case nothing on disk has changed.
        """
        log.info(
            "starting",
            extra={"version": __version__, "pid": os.getpid(), "data_dir": str(self.datadir.root)},
        )
        self.datadir.check_format()
        with DataDirLock(self.datadir):
            keys = KeyStore(self.datadir)
            node_key = await trio.to_thread.run_sync(keys.node_key)
            self._peer_id = node_key.peer_id
            self._warnings = await trio.to_thread.run_sync(keys.permission_warnings)
            for warning in self._warnings:
                log.warning(warning)
            token = (await trio.to_thread.run_sync(self.datadir.token_file.read_text)).strip()
            async with open_store(self.datadir.db_file) as store:
                self._store = store
                self._control = LocalControl(self.datadir, store.db, keys, self.metrics.on_event)
                self.services.append("store")
                try:
                    await self._serve(token, task_status)
                finally:
                    with trio.CancelScope(shield=True):
                        await self.call(self.control.record, "node.stopped", {"pid": os.getpid()})
                    self._api_file_remove()
                    self.services.clear()
        log.info("stopped")

    async def _serve(self, token: str, task_status: trio.TaskStatus[str]) -> None:
        cfg = self.config
        server = HttpServer(
            ControlAPI(self, token).handle,
            cfg.api.host,
            cfg.api.port,
            max_body=cfg.api.max_body_bytes,
        )
        async with trio.open_nursery() as nursery:
            signals = trio.CancelScope()
            if self._handle_signals:
                nursery.start_soon(self._watch_signals, signals)
            host, port = await nursery.start(server.serve)
            self.services.append("control-api")
            self._api_url = f"http://{host}:{port}"
            self._started_at = time.time()
            await self.call(
                self.control.record,
                "node.started",
                {"pid": os.getpid(), "version": __version__, "api": self._api_url},
            )
            await trio.to_thread.run_sync(self._api_file_write, host, port)
            log.info(
                "ready",
                extra={
                    "api": self._api_url,
                    "peer_id": self._peer_id,
                    "data_dir": str(self.datadir.root),
                },
            )
            task_status.started(self._api_url)
            await self._stop.wait()
            # Stop taking work, let what is in flight finish, then cancel the rest.
            server.close()
            signals.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with scope, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self.request_stop(signal.Signals(signum).name)

    def _api_file_write(self, host: str, port: int) -> None:
        info = {"url": f"http://{host}:{port}", "host": host, "port": port, "pid": os.getpid()}
        tmp = self.datadir.api_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, self.datadir.api_file)

    def _api_file_remove(self) -> None:
        self.datadir.api_file.unlink(missing_ok=True)
