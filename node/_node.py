"""The daemon: one `Node` composes every service under one trio nursery.

Start order (stop order is the reverse): data dir lock, keys, store and event
log, metrics, p2p overlay, registry, builds, runtime worker pool, settlement
(ledger, channel book, watcher), commerce (sales, licences), tasks, models
(the ``[models]`` engines served, and this node's calls to others'), the x402
gateway (when ``[gateway] listen`` is set), control API.

Stopping: SIGINT/SIGTERM (when ``handle_signals``), ``POST /v1/shutdown`` or
`Node.request_stop` all end `Node.run` cleanly: services are cancelled (each
must return promptly when cancelled), ``node.stopped`` is appended to the event
log, the store is closed, api.json removed and the lock released.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import resource
import secrets
import signal
import time
from typing import TypeVar

import trio

from mercato.p2p import (
    DhtConfig,
    DiscoveryConfig,
    HostConfig,
    Keypair,
    Overlay,
    OverlayConfig,
    RelayConfig,
    open_overlay,
)
from mercato.runtime import WorkerPool, open_worker_pool
from mercato.settlement import Ledger

from ._config import Config, load_config
from ._errors import NodeError, NotServed
from ._events import EventLog
from ._files import write_atomic
from ._keys import KeyStore
from ._lock import DataDirLock
from ._metrics import NodeMetrics
from ._paths import DataDir
from ._peers import StoreAddressBook
from ._schema import open_node_store
from ._server import HttpListener
from ._store import Store
from ._version import __version__
from .builds import BuildService, BuildStore
from .commerce import CommerceService
from .control import NodeAPI, build_app
from .gateway import Gateway, GatewayService
from .mcp import AppBackend, McpEndpoint, build_server
from .models import ModelRouter, ModelService, read_call_receipt
from .money import SettlementService, open_settlement
from .registry import RegistryService
from .tasks import CardBook, CardExchange, CardForwarder, TaskLog, TaskRunner, TaskService
from .web import WebApp

log = logging.getLogger("mercato.node")

MIN_TOKEN_LENGTH = 32
RELAY_LACKS = frozenset({"builds", "runtime", "settlement", "commerce", "tasks", "models"})
SHUTDOWN_GRACE_S = 3.0
"""Time services get to finish what is in flight before they are cancelled."""
T = TypeVar("T")


def _raise_file_limit(target: int = 65536) -> None:
    """Allow as many open files as the system lets us: every peer connection is one,
    and a node that runs out can accept no one (the control API included)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Node:
    """A mercato node on one data dir.

    ``config`` defaults to the data dir's mercato.toml plus environment
    overrides. The data dir must be initialized (see `init_data_dir`).
    """

    def __init__(
        self,
        datadir: DataDir,
        config: Config | None = None,
        *,
        handle_signals: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        """``ledger`` replaces the one ``[settlement]`` names: nodes in one process
        (tests, benchmarks) share one embedded ledger that way."""
        self.datadir = datadir
        self._ledger = ledger
        self.config = config or load_config(datadir.config_file)
        self.metrics = NodeMetrics(__version__)
        self._handle_signals = handle_signals
        self._stop = trio.Event()
        self.instance = secrets.token_hex(8)
        """Random per run: lets clients tell this daemon from a stale api.json."""
        self._started_at = 0.0
        self._store: Store | None = None
        self._overlay: Overlay | None = None
        self._registry: RegistryService | None = None
        self._runtime: WorkerPool | None = None
        self._builds: BuildService | None = None
        self._tasks: TaskService | None = None
        self._settlement: SettlementService | None = None
        self._commerce: CommerceService | None = None
        self._models: ModelRouter | None = None
        self._model_service: ModelService | None = None
        self._node_key: Keypair | None = None
        self._keys = KeyStore(datadir)
        self._events: EventLog | None = None
        self._api_url = ""
        self._mcp: McpEndpoint | None = None
        self._gateway: Gateway | None = None
        self.gateway: GatewayService | None = None
        """The x402 gateway's service, when ``[gateway] listen`` is set and the node runs."""
        self.web: WebApp | None = None
        """The web app (`mercato ui`), once the node runs."""
        self._peer_id = ""
        self._warnings: list[str] = []
        self.services: list[str] = []
        self.api = NodeAPI(self)
        """Every operation of this node; the control API's routes call it."""

    # -- the services, for the facade (each asserts the node runs) -------------

    @property
    def store(self) -> Store:
        return self._running(self._store, "store")

    @property
    def keys(self) -> KeyStore:
        return self._keys

    @property
    def events(self) -> EventLog:
        """The event log; `EventLog.record` blocks: call it in `store.run`."""
        return self._running(self._events, "store")

    @property
    def overlay(self) -> Overlay:
        return self._running(self._overlay, "p2p")

    @property
    def registry(self) -> RegistryService:
        return self._running(self._registry, "registry")

    @property
    def builds(self) -> BuildService:
        return self._running(self._builds, "builds")

    @property
    def settlement(self) -> SettlementService:
        return self._running(self._settlement, "settlement")

    @property
    def commerce(self) -> CommerceService:
        return self._running(self._commerce, "commerce")

    @property
    def tasks(self) -> TaskService:
        return self._running(self._tasks, "tasks")

    @property
    def models(self) -> ModelRouter:
        """The user's side of models: calls routed to the network's providers."""
        return self._running(self._models, "models")

    @property
    def model_service(self) -> ModelService:
        """The provider's side of models: the ``[models]`` engines this node serves."""
        return self._running(self._model_service, "models")

    @property
    def runtime(self) -> WorkerPool:
        return self._running(self._runtime, "runtime")

    @property
    def api_url(self) -> str:
        return self._api_url

    @property
    def gateway_url(self) -> str:
        """The x402 gateway's URL once it serves ("" when it is off)."""
        return self._gateway.url if self._gateway is not None else ""

    def request_stop(self, reason: str = "request") -> None:
        """Ask `run` to stop; returns at once. Safe to call more than once."""
        if not self._stop.is_set():
            log.info("stopping", extra={"reason": reason})
            self._stop.set()

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def started_at(self) -> float:
        """When the node became ready (Unix time); 0 before."""
        return self._started_at

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings)

    # -- lifecycle -------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until asked to stop. Reports the control API's URL once it answers.

        Raises DataDirLocked if another process holds the data dir; DataDirError,
        ConfigError, KeyStoreError, StoreError or NodeError if local state or the
        API port cannot be used. Nothing on disk changes before the node is up.
        """
        log.info(
            "starting",
            extra={"version": __version__, "pid": os.getpid(), "data_dir": str(self.datadir.root)},
        )
        await trio.to_thread.run_sync(self.datadir.check_format)
        _raise_file_limit()
        lock = DataDirLock(self.datadir)
        await trio.to_thread.run_sync(lock.acquire)
        try:
            keys = self._keys
            token = await trio.to_thread.run_sync(self._load_identity, keys)
            app = build_app(
                self.api,
                token=token,
                max_body=self.config.api.max_body_bytes,
                metrics=self.metrics,
            )
            # The MCP SDK (about 18 MB) is imported on the first request to /mcp.
            self._mcp = McpEndpoint(
                functools.partial(build_server, AppBackend(app, token)), self.config.api.host
            )
            app.mcp = self._mcp
            self.web = WebApp(self.api, max_upload=self.config.api.max_upload_mb * 1024 * 1024)
            app.web = self.web
            app.web_max_body = max(self.config.api.max_upload_mb * 1024 * 1024, app.web_max_body)
            server = HttpListener(
                app, self.config.api.host, self.config.api.port, grace_s=SHUTDOWN_GRACE_S
            )
            self._bind(server)
            if self.config.gateway.listen:  # never on a relay (the configuration says so)
                self._gateway = Gateway(self.config.gateway, self.metrics)
                self._bind_gateway(self._gateway)
            async with open_node_store(self.datadir.db_file) as store:
                self._store = store
                self._events = EventLog(store.db, self.metrics.on_event)
                self.services.append("store")
                try:
                    async with open_overlay(
                        self._key(), self._overlay_config(), StoreAddressBook(store)
                    ) as overlay:
                        self._overlay = overlay
                        self.services.append("p2p")
                        self._registry = RegistryService(store, keys, self._events, overlay)
                        async with trio.open_nursery() as registry_nursery:
                            await registry_nursery.start(self._registry.run)
                            self.services.append("registry")
                            if self.config.node.role == "relay":
                                await registry_nursery.start(CardForwarder(overlay).run)
                                self.services.append("cards")
                                await self._serve(server, task_status)
                            else:
                                await self._run_full(
                                    server, store, keys, overlay, registry_nursery, task_status
                                )
                            registry_nursery.cancel_scope.cancel()
                finally:
                    self._overlay = None
                    with trio.CancelScope(shield=True):
                        await self._record_stop()
        finally:
            lock.release()
        log.info("stopped")

    async def _run_full(
        self,
        server: HttpListener,
        store: Store,
        keys: KeyStore,
        overlay: Overlay,
        nursery: trio.Nursery,
        task_status: trio.TaskStatus[str],
    ) -> None:
        """A full node's services after the registry: builds, runtime, settlement,
        tasks; then the control API until the node stops."""
        self._builds = BuildService(
            store,
            await store.run(
                BuildStore,
                store.db.conn,
                self.datadir.blobs_dir,
                self.config.builds.quota_mb * 1024 * 1024,
            ),
            overlay,
            self.config.builds,
            self._released_builds,
        )
        await nursery.start(self._builds.run)
        self.services.append("builds")
        async with (
            open_worker_pool(self.config.runtime.slots, self.datadir.module_cache_dir) as runtime,
            contextlib.AsyncExitStack() as stack,
        ):
            self._runtime = runtime
            self.services.append("runtime")
            money = await stack.enter_async_context(
                open_settlement(self.config.settlement, self.datadir, keys, self._ledger)
            )
            self._settlement = money
            await nursery.start(money.run)
            self.services.append("settlement")
            commerce = CommerceService(store, keys, self.events, overlay, self.registry, money)
            self._commerce = commerce
            await nursery.start(commerce.run)
            self.services.append("commerce")
            cards, tasklog = CardExchange(overlay, CardBook()), TaskLog(store, self.events)
            await nursery.start(cards.run)
            runner = TaskRunner(
                overlay,
                self.registry,
                self._builds,
                runtime,
                store,
                cards,
                tasklog,
                self.config.runtime,
                self.config.tasks,
                money,
                commerce.held,
            )
            self._tasks = TaskService(
                self._key(),
                overlay,
                self.registry,
                self._builds,
                runtime,
                self.config.runtime,
                self.config.serve,
                cards,
                tasklog,
                runner,
                money,
                commerce.entitlements,
            )
            await nursery.start(self._tasks.run)
            self.services.append("tasks")
            self._model_service = ModelService(
                self._key(), overlay, self.registry, money, self._tasks, tasklog,
                self.config.models,
            )  # fmt: skip
            await nursery.start(self._model_service.run)
            self._models = ModelRouter(
                overlay, self.registry, cards, money, runner, tasklog, self.config.tasks
            )
            await nursery.start(self._models.run)
            # The agents this node runs call models through it, and their users'
            # nodes check those calls' receipts.
            self._tasks.infer = self._models.call_for
            runner.readers["infer"] = read_call_receipt
            self.services.append("models")
            if self._gateway is not None:
                self.gateway = GatewayService(
                    self.config.gateway,
                    self.config.settlement,
                    self._tasks,
                    money,
                    store,
                    self.events,
                    self.metrics,
                )
                self._gateway.attach(self.gateway)
            await self._serve(server, task_status)

    def _key(self) -> Keypair:
        assert self._node_key is not None, "the node key is loaded first"
        return self._node_key

    async def _released_builds(self) -> set[str]:
        """Every build a release binds: the builds this node may be responsible for."""
        if self._registry is None:
            return set()
        cids = await self.store.run(self._registry.replica.release_cids)
        return {cid for cid in cids if cid.startswith("bld-")}

    def _running(self, service: T | None, name: str) -> T:
        """A running service; NotServed for a service a relay does not run."""
        if service is None and self.config.node.role == "relay" and name in RELAY_LACKS:
            raise NotServed(
                f"this node is a relay: it has no {name} (relays run no tasks, store no "
                "builds and hold no wallet)"
            )
        assert service is not None, "node is not running"
        return service

    def _overlay_config(self) -> OverlayConfig:
        p2p, relay = self.config.p2p, self.config.relay
        hop = self.config.node.role == "relay"
        # A private node listens on no socket: no direct dial reaches it, and no
        # direct address leaks through identify, mDNS or the DHT.
        listen = () if p2p.private else p2p.listen
        mode = p2p.dht_mode if p2p.dht_mode != "auto" else ("server" if listen else "client")
        # A reservation holds only while its peer is connected: a relay keeps room.
        connections = (
            max(p2p.max_connections, relay.max_reservations + p2p.target_peers)
            if hop
            else p2p.max_connections
        )
        return OverlayConfig(
            host=HostConfig(listen=listen, max_connections=connections, private=p2p.private),
            relay=RelayConfig(
                hop=hop,
                max_reservations=relay.max_reservations,
                max_circuits=relay.max_circuits,
                circuit_bytes=relay.circuit_mb * 1024 * 1024,
                circuit_s=relay.circuit_s,
                bandwidth_bytes_s=relay.bandwidth_mbit * 125_000,
                reserve_on=p2p.bootstrap if p2p.private else (),
            ),
            dht=DhtConfig(mode=mode),
            discovery=DiscoveryConfig(
                bootstrap=p2p.bootstrap, mdns=p2p.mdns, target_peers=p2p.target_peers
            ),
            agent=f"mercato/{__version__}",
        )

    def _load_identity(self, keys: KeyStore) -> str:
        """Load the node key and the API token (blocking); return the token."""
        self._node_key = keys.node_key()
        self._peer_id = self._node_key.peer_id
        self._warnings = keys.permission_warnings()
        for warning in self._warnings:
            log.warning(warning)
        path = self.datadir.token_file
        token = path.read_text().strip() if path.exists() else ""
        if len(token) < MIN_TOKEN_LENGTH:
            raise NodeError(
                f"the API token in {path} is missing or shorter than {MIN_TOKEN_LENGTH} "
                "characters, which would leave the control API open to anyone on this "
                "machine; write a new one with: python3 -c 'import secrets; "
                f"print(secrets.token_urlsafe(32))' > {path} && chmod 600 {path}"
            )
        return token

    def _bind(self, server: HttpListener) -> None:
        host, port = self.config.api.host, self.config.api.port
        try:
            server.bind()
        except OSError as exc:
            raise NodeError(
                f"cannot listen on {host}:{port} for the control API ({exc.strerror}); "
                "another node may be using that port: choose another with --api-port "
                "or [api] port in mercato.toml"
            ) from exc

    def _bind_gateway(self, gateway: Gateway) -> None:
        try:
            gateway.bind()
        except OSError as exc:
            raise NodeError(
                f"cannot listen on {self.config.gateway.listen} for the x402 gateway "
                f"({exc.strerror}): choose another address with --gateway or [gateway] "
                "listen in mercato.toml"
            ) from exc

    async def _record_stop(self) -> None:
        if self._started_at:
            await self.store.run(self.events.record, "node.stopped", {"pid": os.getpid()})
        await trio.to_thread.run_sync(self._api_file_remove)
        self.services.clear()

    async def _serve(self, server: HttpListener, task_status: trio.TaskStatus[str]) -> None:
        async with trio.open_nursery() as nursery:
            signals = trio.CancelScope()
            if self._handle_signals:
                nursery.start_soon(self._watch_signals, signals)
            assert self._mcp is not None, "set in run"
            await nursery.start(self._mcp.run)
            assert self.web is not None, "set in run"
            await nursery.start(self.web.run)
            if self._gateway is not None:
                await nursery.start(self._gateway.run)
                self.services.append("gateway")
            host, port = await nursery.start(server.serve)
            self.services.append("control-api")
            self._api_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
            self._started_at = time.time()
            await self.store.run(
                self.events.record,
                "node.started",
                {"pid": os.getpid(), "version": __version__, "api": self._api_url},
            )
            await trio.to_thread.run_sync(self._api_file_write, host, port)
            log.info(
                "ready",
                extra={
                    "api": self._api_url,
                    **({"gateway": self.gateway_url} if self.gateway_url else {}),
                    "peer_id": self._peer_id,
                    "data_dir": str(self.datadir.root),
                },
            )
            # The addresses others dial (the first 8, as in an agent card): a relay's
            # operator hands these out as bootstrap peers (README, "Operating a relay").
            said = "bootstrap address" if self.config.node.role == "relay" else "listening"
            for addr in self.overlay.host.listen_addrs()[:8]:
                log.info(said, extra={"addr": addr})
            task_status.started(self._api_url)
            await self._stop.wait()
            # Stop taking work, let what is in flight finish, then cancel the rest.
            server.close()
            if self._gateway is not None:
                self._gateway.close()
            self._mcp.close()
            self.web.close()
            signals.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S

    async def _watch_signals(self, scope: trio.CancelScope) -> None:
        with scope, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                self.request_stop(signal.Signals(signum).name)

    def _api_file_write(self, host: str, port: int) -> None:
        info = {
            "url": self._api_url,
            "host": host,
            "port": port,
            "pid": os.getpid(),
            "instance": self.instance,
        }
        write_atomic(self.datadir.api_file, json.dumps(info).encode() + b"\n", 0o600)

    def _api_file_remove(self) -> None:
        self.datadir.api_file.unlink(missing_ok=True)
