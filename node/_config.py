"""The node's configuration: one frozen, typed object loaded once at start.

Sources, later ones winning: the defaults below, ``<data dir>/mercato.toml``,
environment variables ``MERCATO_<SECTION>_<KEY>`` (e.g. ``MERCATO_API_PORT=0``),
then command-line flags (applied by the caller with `Config.replace`).

Example ``mercato.toml``::

    [log]
    level = "debug"
    format = "json"

    [api]
    port = 7311

An unknown section or key, or a value of the wrong type, is a `ConfigError`
whose message names the key and the file (or variable) it came from.

``[models.NAME]`` tables (the models this node serves, `ServedModel`) are read
from the file only: the environment and flags do not reach them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from ._errors import ConfigError
from ._files import read_toml

DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 7311
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_UPLOAD_MB = 64
DEFAULT_LISTEN = ("/ip4/0.0.0.0/tcp/4001",)
DHT_MODES = ("auto", "server", "client")
LEDGERS = ("embedded", "localnet", "rpc")
ROLES = ("full", "relay")
DEFAULT_RPC_URL = "http://127.0.0.1:8899"  # where `mercato localnet` listens by default
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_COPIES_WAIT_S = 600.0  # a release answers within the CLI's patience (cli/_release.py)
LOG_FORMATS = ("text", "json")
ENV_PREFIX = "MERCATO_"
MAX_LAMPORTS = 10**15
MAX_PAYMENT_TIMEOUT_S = 60  # [gateway] max_timeout_s: about a blockhash's life
_BASE58_KEY = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_HOSTNAME = re.compile(r"[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*")
_CAIP2 = re.compile(r"[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}")
_LISTING_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")  # as the registry's schema
_MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_ENGINE_MODEL = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
DEFAULT_MODEL_CONCURRENCY = 4
DEFAULT_HEALTH_INTERVAL_S = 5.0


@dataclass(frozen=True)
class NodeSection:
    """``[node]``: the daemon itself."""

    name: str = ""
    """A label for this node in logs and status; empty means none."""
    role: str = "full"
    """``full`` (registry, builds, runtime, wallet, tasks) or ``relay``: a slim public
    node for a VPS (DHT server, gossip, circuit relay for peers behind NAT; no
    runtime, no builds, no wallet)."""


@dataclass(frozen=True)
class LogSection:
    """``[log]``: what the daemon logs and how."""

    level: str = "info"
    format: str = "text"
    """``text`` for people, ``json`` for one JSON object per line."""


@dataclass(frozen=True)
class ApiSection:
    """``[api]``: the control API, always on a loopback address."""

    host: str = DEFAULT_API_HOST
    port: int = DEFAULT_API_PORT
    """0 picks a free port; the daemon writes the one it got to api.json."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    """The web app's build uploads; larger ones are refused before they are stored."""


@dataclass(frozen=True)
class P2PSection:
    """``[p2p]``: how the node joins the network."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    """Multiaddrs to listen on; empty means none (a node that only dials out)."""
    bootstrap: tuple[str, ...] = ()
    """Peers to join through, as /ip4/HOST/tcp/PORT/p2p/PEER_ID."""
    mdns: bool = True
    """Find other mercato nodes on the local network."""
    max_connections: int = 128
    target_peers: int = 16
    """Keep dialing known peers while fewer than this many are connected."""
    dht_mode: str = "auto"
    """``server``, ``client``, or ``auto``: server when the node listens."""
    private: bool = False
    """Never dialed directly: listen on no socket (``listen`` is ignored), reveal
    no address, and be reached through the relays on the bootstrap list (a
    reservation on each). Without it, a node that peers cannot dial back uses
    connected relays by itself."""


@dataclass(frozen=True)
class RelaySection:
    """``[relay]``: what a relay (``[node] role = "relay"``) grants the peers it relays for."""

    max_reservations: int = 128
    """Peers holding a reservation at once; more are refused."""
    max_circuits: int = 8
    """Circuits at once through one peer's reservation."""
    circuit_mb: int = 64
    """Megabytes one circuit may carry (both directions); then it is cut."""
    circuit_s: int = 600
    """Seconds one circuit may last."""
    bandwidth_mbit: int = 0
    """Megabits per second all circuits together may carry; 0 for no cap."""


@dataclass(frozen=True)
class RuntimeSection:
    """``[runtime]``: the WebAssembly sandbox that runs agent builds."""

    slots: int = 2
    """Runs at once, each in its own worker process."""
    max_memory_mb: int = 512
    """No run may have more linear memory than this, whatever its listing asks."""
    max_timeout_s: float = 60.0
    """No run may last longer than this, whatever its listing asks."""


@dataclass(frozen=True)
class BuildsSection:
    """``[builds]``: the content-addressed store of agent builds."""

    quota_mb: int = 10_240
    """Disk the build store may use, in MB."""
    replicas: int = 3
    """Copies of each released build, on the peers closest to it (Kademlia XOR)."""
    repair_interval_s: float = 10.0
    """How often a node checks which builds it is responsible for."""
    min_copies: int = 1
    """Other peers that must hold a build before `release --build` binds it."""
    copies_wait_s: float = 40.0
    """How long a release waits for those copies before it gives up (binding nothing)."""


@dataclass(frozen=True)
class ServeSection:
    """``[serve]``: the agents this node runs for others (none: not a provider)."""

    agents: tuple[str, ...] = ()
    """PUBLISHER/NAME of each agent this node runs for other peers."""
    heartbeat_s: float = 30.0
    """How often this node's agent card is published again."""
    card_ttl_s: float = 90.0
    """How long a card holds without a new one: a silent provider drops out after it."""


@dataclass(frozen=True)
class TasksSection:
    """``[tasks]``: how this node runs agents on other peers (see node/_choice.py)."""

    quote_fanout: int = 3
    """Providers asked for a quote at once, the best by price, reputation, latency, load."""
    quote_deadline_s: float = 2.0
    """Quotes that take longer are not waited for."""
    max_attempts: int = 4
    """Providers tried for one task before it fails."""
    timeout_s: float = 120.0
    """How long one provider may take to answer a run."""
    verify_first: int = 2
    """The first tasks of each new provider are cross-checked on a second opinion."""
    verify_rate: float = 0.05
    """After that, the share of tasks cross-checked at random."""
    reputation_half_life_h: float = 24.0
    """Old experience with a provider counts half after this many hours."""


@dataclass(frozen=True)
class SpendingSection:
    """``[spending]``: what this node may pay for the tasks it asks others to run,
    in lamports; None (the key left out) is no limit."""

    max_per_task: int | None = None
    """The most one task may cost; a run asking more (``max_price``) is refused."""
    max_per_day: int | None = None
    """The most the tasks of one UTC day may cost together (resets at 00:00 UTC)."""
    approve_above: int | None = None
    """A run that may cost more needs a human's confirmation (``approved``)."""


@dataclass(frozen=True)
class SettlementSection:
    """``[settlement]``: payment channels and the ledger they live on."""

    ledger: str = "embedded"
    """``embedded``: the Solana runtime inside this node, private to it (the default,
    no cluster needed). ``localnet``: the one ``mercato localnet`` serves at
    ``rpc_url``, shared by the nodes on this machine. ``rpc``: any Solana cluster
    at ``rpc_url`` (devnet, mainnet)."""
    rpc_url: str = DEFAULT_RPC_URL
    """The JSON-RPC URL of the ``localnet`` or ``rpc`` ledger."""
    account: str = "default"
    """The account key that pays and is paid (its public key is the Solana address)."""
    faucet_lamports: int = 10_000_000_000
    """The embedded ledger and the localnet credit an empty account this much at
    start (10 SOL)."""
    deposit_lamports: int = 100_000_000
    """What a new channel holds (0.1 SOL)."""
    channel_duration_s: int = 86_400
    """How long a new channel stays open (its lockup)."""
    close_margin_s: int = 3_600
    """The payee closes this long before the lockup ends."""
    watch_interval_s: float = 10.0
    """How often the watcher looks for channels to close or refund."""


@dataclass(frozen=True)
class GatewaySection:
    """``[gateway]``: the public x402 gateway, where anyone with an HTTP client and a
    Solana wallet pays for one run of an agent this node serves (off by default).

    Example::

        [gateway]
        listen = "0.0.0.0:8402"
        asset = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"  # USDC on mainnet
        units_per_lamport = 0.0002  # a 1,000,000-lamport listing asks 200 base units
    """

    listen: str = ""
    """HOST:PORT to serve on (``0.0.0.0:8402``); empty is off."""
    asset: str = ""
    """The SPL token mint a run is paid in. Empty on a local ledger (embedded or
    localnet) means its test mint; required on a cluster."""
    network: str = ""
    """The ledger's CAIP-2 id as x402 names it; empty means mainnet's
    (``solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp``) when ``[settlement] rpc_url`` is
    mainnet's, else devnet's (``solana:EtWTRABZaYq6iMfeYKouRu166VU2xqa1``)."""
    units_per_lamport: float = 1.0
    """A run's x402 price, in the asset's base units, is the listing's price in
    lamports times this, rounded up."""
    rate_per_min: int = 600
    """Requests one client IP may make a minute (a burst of as many, then steady)."""
    max_body_mb: int = 8
    """The largest input a request may carry; larger is refused (413)."""
    max_timeout_s: int = 60
    """The ``maxTimeoutSeconds`` of the payment requirements: at most 60, about
    how long a payment's blockhash lasts."""


@dataclass(frozen=True)
class ServedModel:
    """``[models.NAME]``: a model listing this node serves through an OpenAI-compatible
    inference engine (llama.cpp's server, vLLM, Ollama) that runs beside it. The
    daemon starts no engine: it calls the one at ``backend``.

    Example::

        [models.tiny]
        listing = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB/tiny-chat"
        backend = "http://127.0.0.1:8080/v1"
        engine_model = "tiny"
        api_key_env = "ENGINE_KEY"
    """

    name: str
    """The table's name: this node's own name for the served model."""
    listing: str
    """PUBLISHER/NAME of the model listing it serves."""
    backend: str
    """The engine's OpenAI-compatible base URL, e.g. ``http://127.0.0.1:8080/v1``."""
    engine_model: str = ""
    """The engine's own name for the model; left out (empty), the listing's NAME."""
    concurrency: int = DEFAULT_MODEL_CONCURRENCY
    """Requests sent to the engine at once."""
    input_price: int | None = None
    """This provider's lamports per 1,000 input tokens; None: the listing's."""
    output_price: int | None = None
    """This provider's lamports per 1,000 output tokens; None: the listing's."""
    api_key_env: str = ""
    """The name of the environment variable holding a bearer key for the backend
    (the key itself is never in the file); empty: no key."""
    health_interval_s: float = DEFAULT_HEALTH_INTERVAL_S
    """How often the backend's health is checked."""

    def __post_init__(self) -> None:
        if not self.engine_model:
            object.__setattr__(self, "engine_model", self.listing.partition("/")[2])


@dataclass(frozen=True)
class Config:
    """Everything the daemon reads from configuration."""

    node: NodeSection = field(default_factory=NodeSection)
    log: LogSection = field(default_factory=LogSection)
    api: ApiSection = field(default_factory=ApiSection)
    p2p: P2PSection = field(default_factory=P2PSection)
    runtime: RuntimeSection = field(default_factory=RuntimeSection)
    builds: BuildsSection = field(default_factory=BuildsSection)
    serve: ServeSection = field(default_factory=ServeSection)
    tasks: TasksSection = field(default_factory=TasksSection)
    spending: SpendingSection = field(default_factory=SpendingSection)
    settlement: SettlementSection = field(default_factory=SettlementSection)
    relay: RelaySection = field(default_factory=RelaySection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    models: tuple[ServedModel, ...] = ()
    """The ``[models.NAME]`` tables: the models this node serves (none: it serves none)."""

    def replace(self, section: str, **values: Any) -> Config:
        """A copy with some keys of one section changed (used for CLI flags)."""
        current: Any = getattr(self, section)
        if section == "models":
            raise ConfigError("[models] is set in mercato.toml only, not on the command line")
        changed = dataclasses.replace(current, **values)
        new = dataclasses.replace(self, **{section: changed})
        _validate(new, lambda key: "command line")
        return new

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every section as a table of its keys, as mercato.toml has them: ``models``
        maps each served model's name to its keys."""
        out = dataclasses.asdict(self)
        out["models"] = {
            model.name: {k: v for k, v in dataclasses.asdict(model).items() if k != "name"}
            for model in self.models
        }
        return out


def _sections() -> dict[str, type]:
    """The sections of one table each (``[models]`` holds a table per model)."""
    return {name: tp for name, tp in get_type_hints(Config).items() if name != "models"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against ``tp``; strings from the environment are parsed."""
    if tp == int | None:  # a limit: "none" or "" from the environment is no limit
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return _coerce(value, int, where)
    if tp == tuple[str, ...]:
        if isinstance(value, str):  # environment: comma-separated
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(value, str) and tp is not str:
        try:
            if tp is bool:
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError
                return value.lower() in ("1", "true", "yes")
            return tp(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from exc
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not tp:
        raise ConfigError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build_section(tp: type, values: Mapping[str, Any], where: str) -> Any:
    hints = get_type_hints(tp)
    known = ", ".join(hints)
    out = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        out[key] = _coerce(value, hints[key], f"{where}: key {key!r}")
    return tp(**out)


def _validate(config: Config, origin: Callable[[str], str]) -> None:
    """Check values that their type alone does not; ``origin(key)`` says where a key was set."""

    def fail(key: str, rule: str) -> ConfigError:
        section, _, name = key.partition(".")
        value = getattr(getattr(config, section), name)
        return ConfigError(f"{origin(key)}: {key} {rule}, got {value!r}")

    if config.log.level not in LOG_LEVELS:
        raise fail("log.level", f"must be one of {', '.join(LOG_LEVELS)}")
    if config.log.format not in LOG_FORMATS:
        raise fail("log.format", f"must be one of {', '.join(LOG_FORMATS)}")
    try:
        loopback = ipaddress.ip_address(config.api.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise fail(
            "api.host",
            "must be a loopback address such as 127.0.0.1 (the control API is never "
            "exposed to the network)",
        )
    if not 0 <= config.api.port <= 65535:
        raise fail("api.port", "must be between 0 and 65535")
    if config.api.max_body_bytes < 1024:
        raise fail("api.max_body_bytes", "must be at least 1024")
    if not 1 <= config.api.max_upload_mb <= 4096:
        raise fail("api.max_upload_mb", "must be between 1 and 4096")
    if not 0.1 <= config.serve.heartbeat_s < config.serve.card_ttl_s <= 600:
        raise fail("serve.heartbeat_s", "must be at least 0.1 and below serve.card_ttl_s (<= 600)")
    for agent in config.serve.agents:
        if agent.count("/") != 1 or not all(agent.split("/")):
            raise fail("serve.agents", "must be PUBLISHER/NAME entries")
    if config.node.role not in ROLES:
        raise fail("node.role", f"must be one of {', '.join(ROLES)}")
    relay = config.relay
    if not 1 <= relay.max_reservations <= 100_000 or not 1 <= relay.max_circuits <= 1024:
        raise fail("relay.max_reservations", "must be 1 to 100,000 (max_circuits 1 to 1024)")
    if not 1 <= relay.circuit_mb <= 100_000 or not 10 <= relay.circuit_s <= 86_400:
        raise fail("relay.circuit_mb", "must be 1 to 100,000 (circuit_s 10 to 86,400)")
    if not 0 <= relay.bandwidth_mbit <= 100_000:
        raise fail("relay.bandwidth_mbit", "must be 0 (no cap) to 100,000")
    money = config.settlement
    if money.ledger not in LEDGERS:
        raise fail("settlement.ledger", f"must be one of {', '.join(LEDGERS)}")
    url = urlsplit(money.rpc_url)
    if url.scheme not in ("http", "https") or not url.hostname or len(money.rpc_url) > 2048:
        raise fail("settlement.rpc_url", "must be an http:// or https:// URL")
    if not 0 <= money.faucet_lamports <= 10**15 or not 1 <= money.deposit_lamports <= 10**15:
        raise fail("settlement.deposit_lamports", "must be between 1 and 10**15 (faucet 0 or more)")
    if not money.close_margin_s >= 300 or money.channel_duration_s > 366 * 86_400:
        raise fail(
            "settlement.close_margin_s", "must be at least 300, and a channel a year at most"
        )
    if money.channel_duration_s < 2 * money.close_margin_s + 600:
        raise fail(
            "settlement.channel_duration_s",
            "must be at least twice close_margin_s plus 600: tasks use a channel only while "
            "it has more than two margins left",
        )
    if not 0.1 <= money.watch_interval_s <= 3600:
        raise fail("settlement.watch_interval_s", "must be between 0.1 and 3600")
    _validate_gateway(config, fail)
    tasks = config.tasks
    if not 1 <= tasks.quote_fanout <= 16:
        raise fail("tasks.quote_fanout", "must be between 1 and 16")
    if not 0.05 <= tasks.quote_deadline_s <= 60:
        raise fail("tasks.quote_deadline_s", "must be between 0.05 and 60")
    if not 1 <= tasks.max_attempts <= 16:
        raise fail("tasks.max_attempts", "must be between 1 and 16")
    if not 0.1 <= tasks.timeout_s <= 3600:
        raise fail("tasks.timeout_s", "must be between 0.1 and 3600")
    if not 0 <= tasks.verify_first <= 1000:
        raise fail("tasks.verify_first", "must be between 0 and 1000")
    if not 0 <= tasks.verify_rate <= 1:
        raise fail("tasks.verify_rate", "must be between 0 and 1")
    if not 0.01 <= tasks.reputation_half_life_h <= 10_000:
        raise fail("tasks.reputation_half_life_h", "must be between 0.01 and 10000")
    for key in ("max_per_task", "max_per_day", "approve_above"):
        limit = getattr(config.spending, key)
        if limit is not None and not 0 <= limit <= MAX_LAMPORTS:
            rule = f"must be a whole number of lamports from 0 to {MAX_LAMPORTS}"
            raise fail(f"spending.{key}", rule)
    if config.builds.quota_mb < 1:
        raise fail("builds.quota_mb", "must be at least 1")
    if not 1 <= config.builds.replicas <= 20:
        raise fail("builds.replicas", "must be between 1 and 20")
    if not 0.1 <= config.builds.repair_interval_s <= 3600:
        raise fail("builds.repair_interval_s", "must be between 0.1 and 3600")
    if not 0 <= config.builds.min_copies <= config.builds.replicas:
        raise fail("builds.min_copies", "must be between 0 and builds.replicas")
    if not 1 <= config.builds.copies_wait_s <= MAX_COPIES_WAIT_S:
        raise fail("builds.copies_wait_s", f"must be from 1 to {MAX_COPIES_WAIT_S:g} seconds")
    if not 1 <= config.runtime.slots <= 64:
        raise fail("runtime.slots", "must be between 1 and 64")
    if not 1 <= config.runtime.max_memory_mb <= 4096:
        raise fail("runtime.max_memory_mb", "must be between 1 and 4096")
    if not 0.001 <= config.runtime.max_timeout_s <= 3600:
        raise fail("runtime.max_timeout_s", "must be between 0.001 and 3600")
    _validate_models(config.models, origin("models"))
    if config.p2p.dht_mode not in DHT_MODES:
        raise fail("p2p.dht_mode", f"must be one of {', '.join(DHT_MODES)}")
    if config.p2p.max_connections < 1 or config.p2p.target_peers < 0:
        raise fail("p2p.max_connections", "must be at least 1 (and target_peers at least 0)")
    for key in ("listen", "bootstrap"):
        for addr in getattr(config.p2p, key):
            if not _looks_like_multiaddr(addr, need_peer=key == "bootstrap"):
                raise ConfigError(
                    f"{origin('p2p.' + key)}: p2p.{key} entry {addr!r} is not a multiaddr like "
                    + (
                        "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."
                        if key == "bootstrap"
                        else "/ip4/0.0.0.0/tcp/4001"
                    )
                )


def split_host_port(value: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (``[::]:8402`` for IPv6) as (host, port); None if it is not one."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            return None
    return host, int(port)


def _validate_gateway(config: Config, fail: Callable[[str, str], ConfigError]) -> None:
    gateway = config.gateway
    if gateway.listen and split_host_port(gateway.listen) is None:
        raise fail("gateway.listen", 'must be HOST:PORT, such as "0.0.0.0:8402" (or empty: off)')
    if gateway.listen and config.node.role == "relay":
        raise fail("gateway.listen", "must be empty on a relay (a relay runs no agents)")
    if gateway.asset and not _BASE58_KEY.fullmatch(gateway.asset):
        raise fail("gateway.asset", "must be an SPL token mint's address (base58)")
    if gateway.listen and not gateway.asset and config.settlement.ledger == "rpc":
        raise fail(
            "gateway.asset",
            "must name the SPL token mint runs are paid in on a cluster (USDC is "
            "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v on mainnet); only a local "
            "ledger has a test mint",
        )
    if gateway.network and not _CAIP2.fullmatch(gateway.network):
        raise fail("gateway.network", 'must be a CAIP-2 id such as "solana:EtWTRABZ..." or empty')
    if not 0 < gateway.units_per_lamport <= 1e9:
        raise fail("gateway.units_per_lamport", "must be above 0 and at most 1e9")
    if not 1 <= gateway.rate_per_min <= 1_000_000:
        raise fail("gateway.rate_per_min", "must be between 1 and 1,000,000")
    if not 1 <= gateway.max_body_mb <= 1024:
        raise fail("gateway.max_body_mb", "must be between 1 and 1024")
    if not 5 <= gateway.max_timeout_s <= MAX_PAYMENT_TIMEOUT_S:
        raise fail(
            "gateway.max_timeout_s",
            f"must be between 5 and {MAX_PAYMENT_TIMEOUT_S}: a payment's blockhash lasts "
            "about a minute, and it must land before it expires",
        )


def _models(values: Any, where: str) -> tuple[ServedModel, ...]:
    """The ``[models.NAME]`` tables of mercato.toml, typed (`_validate_models` checks them)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: 'models' must be tables like [models.NAME], not a value")
    hints = {k: v for k, v in get_type_hints(ServedModel).items() if k != "name"}
    known = ", ".join(hints)
    models = []
    for name, table in values.items():
        if not _MODEL_NAME.fullmatch(name):
            raise ConfigError(
                f"{where}: [models.{name}]: a served model's name is 1-64 lowercase letters, "
                "digits, '.', '_' or '-'"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: models.{name} must be a table, [models.{name}]")
        out = {}
        for key, value in table.items():
            if key not in hints:
                raise ConfigError(
                    f"{where}: [models.{name}]: unknown key {key!r} (known keys: {known})"
                )
            out[key] = _coerce(value, hints[key], f"{where}: [models.{name}]: key {key!r}")
        for key in ("listing", "backend"):
            if key not in out:
                raise ConfigError(f"{where}: [models.{name}]: key {key!r} is required")
        models.append(ServedModel(name=name, **out))
    return tuple(models)


def _validate_models(models: tuple[ServedModel, ...], where: str) -> None:
    """Check each served model's values, and that no two serve the same listing."""
    served: dict[str, str] = {}
    for model in models:

        def fail(key: str, rule: str, model: ServedModel = model) -> ConfigError:
            value = getattr(model, key)
            return ConfigError(f"{where}: models.{model.name}.{key} {rule}, got {value!r}")

        publisher, _, name = model.listing.partition("/")
        if not _BASE58_KEY.fullmatch(publisher) or not _LISTING_NAME.fullmatch(name):
            raise fail(
                "listing",
                "must be PUBLISHER/NAME: the model listing's base58 publisher and its name",
            )
        url = urlsplit(model.backend)
        if url.scheme not in ("http", "https") or not url.hostname or len(model.backend) > 2048:
            raise fail(
                "backend",
                "must be the engine's http:// or https:// base URL, such as "
                '"http://127.0.0.1:8080/v1"',
            )
        if url.username or url.password:
            raise fail(
                "backend",
                "must hold no credentials: put the engine's key in an environment variable "
                "and name it in api_key_env",
            )
        if not _ENGINE_MODEL.fullmatch(model.engine_model):
            raise fail(
                "engine_model",
                "must be the engine's name for the model: 1-256 characters, no spaces",
            )
        if not 1 <= model.concurrency <= 1024:
            raise fail("concurrency", "must be between 1 and 1024")
        for key in ("input_price", "output_price"):
            price = getattr(model, key)
            if price is not None and not 0 <= price <= MAX_LAMPORTS:
                raise fail(
                    key,
                    f"must be lamports per 1,000 tokens from 0 to {MAX_LAMPORTS} (or left "
                    "out: the listing's)",
                )
        if model.api_key_env and not _ENV_NAME.fullmatch(model.api_key_env):
            raise fail(
                "api_key_env",
                "must be the name of an environment variable that holds the key (like "
                "ENGINE_KEY), never the key itself",
            )
        if not 0.5 <= model.health_interval_s <= 300:
            raise fail("health_interval_s", "must be between 0.5 and 300 seconds")
        if model.listing in served:
            raise fail(
                "listing",
                f"is served by [models.{served[model.listing]}] already: one table per listing",
            )
        served[model.listing] = model.name


def _looks_like_multiaddr(addr: str, need_peer: bool) -> bool:
    parts = addr.split("/")
    if len(parts) < 5 or parts[0] != "" or parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        return False
    if parts[3] != "tcp" or not parts[4].isdigit() or int(parts[4]) > 65535:
        return False
    return not need_peer or (len(parts) == 7 and parts[5] == "p2p" and len(parts[6]) > 40)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path, error=ConfigError)
    except FileNotFoundError:
        return {}


def _env_values(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """``MERCATO_<SECTION>_<KEY>`` variables whose section exists, by section."""
    sections = _sections()
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, value in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section == "models" and key:
            raise ConfigError(
                f"environment variable {var}: [models] is set in mercato.toml only, one "
                "[models.NAME] table per served model"
            )
        if section in sections and key:
            found.setdefault(section, {})[key] = (var, value)
    return found


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Load ``path`` (missing is fine) plus environment overrides into a `Config`.

    Raises ConfigError naming the offending key and file or variable.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(path)
    sections = _sections()
    built: dict[str, Any] = {}
    for name, values in raw.items():
        if name == "models":
            built[name] = _models(values, str(path))
            continue
        if name not in sections:
            known = ", ".join([*sections, "models"])
            raise ConfigError(f"{path}: unknown section [{name}] (known sections: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: {name!r} must be a [section], not a value")
        built[name] = _build_section(sections[name], values, f"{path}: [{name}]")
    origins: dict[str, str] = {}
    for name, pairs in _env_values(environ).items():
        tp = sections[name]
        hints = get_type_hints(tp)
        current = dataclasses.asdict(built.get(name, tp()))
        for key, (var, value) in pairs.items():
            if key not in hints:
                raise ConfigError(
                    f"environment variable {var}: unknown key {key!r} in [{name}] "
                    f"(known keys: {', '.join(hints)})"
                )
            current[key] = _coerce(value, hints[key], f"environment variable {var}")
            origins[f"{name}.{key}"] = f"environment variable {var}"
        built[name] = tp(**current)
    config = Config(**built)
    _validate(config, lambda key: origins.get(key, str(path)))
    return config


DEFAULT_CONFIG_TOML = f"""\
# mercato node configuration. Every key is optional; the values below are the
# defaults. Environment variables override this file: MERCATO_<SECTION>_<KEY>,
# e.g. MERCATO_API_PORT=7400 or MERCATO_LOG_FORMAT=json.

[node]
# A label for this node in logs and status.
name = ""
# full: registry, builds, runtime, wallet and tasks. relay: a slim public node for
# a VPS (DHT server, gossip, circuit relay for peers behind NAT), nothing else.
role = "full"

[log]
# debug | info | warning | error
level = "info"
# text (for people) | json (one object per line)
format = "text"

[p2p]
# Addresses to listen on for other nodes.
listen = ["/ip4/0.0.0.0/tcp/4001"]
# Peers to join the network through, e.g. "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW...".
bootstrap = []
# Find other mercato nodes on the local network.
mdns = true
max_connections = 128
# Keep dialing known peers while fewer than this many are connected.
target_peers = 16
# server | client | auto (server when the node listens)
dht_mode = "auto"
# Never dialed directly: listen on no socket (listen is ignored), reveal no
# address, be reached through the relays on the bootstrap list. Without it, a
# node behind NAT finds out by itself (peers dial it back) and uses relays.
private = false

[relay]
# What a relay ([node] role = "relay") grants: reservations in all, circuits at
# once per reservation, per circuit its megabytes and seconds, and the megabits
# per second all circuits together may carry (0: no cap; set it to what the VPS's
# plan allows).
max_reservations = 128
max_circuits = 8
circuit_mb = 64
circuit_s = 600
bandwidth_mbit = 0

[runtime]
# Agent runs at once, each in its own worker process.
slots = 2
# Caps on any one run, whatever its listing asks.
max_memory_mb = 512
max_timeout_s = 60.0

[builds]
# Disk the build store may use, in MB.
quota_mb = 10240
# Copies of each released build, kept on the peers closest to it.
replicas = 3
# How often to check which builds this node is responsible for, in seconds.
repair_interval_s = 10.0
# Other peers that must hold a build before `mercato release --build` binds it.
min_copies = 1
# How long a release waits for those copies before it gives up, in seconds.
copies_wait_s = 40.0

[serve]
# Agents this node runs for other peers, as "PUBLISHER/NAME" (none: not a provider).
agents = []
# How often this node's agent card is published, and how long one holds.
heartbeat_s = 30.0
card_ttl_s = 90.0

# Models this node serves through an OpenAI-compatible inference engine that
# runs beside it (llama.cpp's server, vLLM, Ollama): the daemon starts no engine,
# it calls the one at backend. One table per model listing, named as you like;
# none by default. listing and backend are required; the rest shows the defaults
# (engine_model: the listing's NAME; prices: the listing's, per 1,000 tokens).
# [models.tiny]
# listing = "PUBLISHER/NAME"
# backend = "http://127.0.0.1:8080/v1"
# engine_model = "tiny-chat"
# concurrency = 4
# input_price = 100
# output_price = 300
# The name of an environment variable holding the engine's bearer key (never the key).
# api_key_env = "ENGINE_KEY"
# health_interval_s = 5.0

[tasks]
# Providers asked for a quote at once, and how long to wait for their quotes.
quote_fanout = 3
quote_deadline_s = 2.0
# Providers tried for one task before it fails; how long one may take to answer.
max_attempts = 4
timeout_s = 120.0
# Second opinions: the first tasks of each provider, then this share of the rest.
verify_first = 2
verify_rate = 0.05
# Old experience with a provider counts half after this many hours.
reputation_half_life_h = 24.0

[spending]
# Limits on what this node pays for the tasks it runs on others, in lamports;
# a key left out is no limit. The most one task may cost; the most the tasks of
# one UTC day may cost together; and above what price a run needs a human's
# confirmation (`mercato run` asks on the terminal, or takes --yes).
# max_per_task = 10000000
# max_per_day = 100000000
# approve_above = 5000000

[settlement]
# embedded: the Solana runtime inside this node, private to it (no cluster needed).
# localnet: the ledger `mercato localnet` serves at rpc_url, shared on this machine.
# rpc: any Solana cluster at rpc_url (devnet, mainnet).
ledger = "embedded"
rpc_url = "{DEFAULT_RPC_URL}"
# The account key that pays and is paid; its public key is the Solana address.
account = "default"
# The embedded ledger and the localnet credit an empty wallet this much at start (10 SOL).
faucet_lamports = 10000000000
# A new channel's deposit and how long it stays open, in lamports and seconds.
deposit_lamports = 100000000
channel_duration_s = 86400
# Close channels this long before their lockup ends; look every watch_interval_s.
close_margin_s = 3600
watch_interval_s = 10.0

[gateway]
# The public x402 gateway: anyone with an HTTP client and a Solana wallet pays for
# one run of an agent this node serves (see the README). Off while listen is empty.
listen = ""
# The SPL token mint runs are paid in; empty on a local ledger means its test mint.
asset = ""
# The ledger's CAIP-2 id; empty: mainnet's when rpc_url is mainnet's, else devnet's.
network = ""
# A run's price in the asset's base units: the listing's lamports times this, rounded up.
units_per_lamport = 1.0
# Requests per minute from one client IP; the largest input, in MiB; the
# payment requirements' maxTimeoutSeconds (at most 60: a blockhash's life).
rate_per_min = 600
max_body_mb = 8
max_timeout_s = 60

[api]
# The control API listens on loopback only. Port 0 picks a free port.
host = "{DEFAULT_API_HOST}"
port = {DEFAULT_API_PORT}
# Larger request bodies are refused with 413.
max_body_bytes = {DEFAULT_MAX_BODY_BYTES}
# Builds uploaded in the web app (`mercato ui`) up to this size, in MiB.
max_upload_mb = {DEFAULT_MAX_UPLOAD_MB}
"""
