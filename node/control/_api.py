"""`NodeAPI`: every operation of a running node, in one typed facade.

The HTTP routes (``_routes.py``), and whatever else drives a node in process,
call these methods; `ControlClient` calls the same operations over HTTP. The
facade holds the rules of each operation (what a valid peer, price or range is,
which service answers); the services hold the domain. Sub-APIs per domain:
``node``, ``registry``, ``builds``, ``runtime``, ``tasks``, ``money``,
``commerce``.

Errors: a refusal of the facade's own is a `ControlError` carrying its HTTP
status and code; an error of a service is raised as it is, and
``_errors.ERRORS`` maps it to a status and a code. Nothing here blocks the trio
loop: SQLite and the event log go through the store's thread, and encoding
large outputs through a worker thread. Cancellation propagates; what a
service has stored before it is cancelled stays stored.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio
from solders.pubkey import Pubkey

from mercato.crdt import Query, QueryError, ReleaseExists, sync_digest
from mercato.p2p import (
    BadAddress,
    FrameError,
    P2PError,
    RemoteError,
    b58decode,
    decode_canonical,
    public_key_of_peer,
)
from mercato.runtime import HostStatus, InvalidModule, Limits

from .._errors import ControlError, NodeError
from .._events import event_head, list_events, verify_events
from .._version import __version__
from ..builds import BuildError, Spread, check_cid, manifest_of, responsible
from ..commerce import LicenceRequired
from ..models import InferReceipt
from ..money import ServedTask, channel_info, earnings
from ..tasks import (
    BadReceipt,
    Budget,
    Receipt,
    SubCall,
    TaskRecord,
    decode_subcalls,
    prove_receipt,
)
from . import _models as m
from ._chat import ModelOps

if TYPE_CHECKING:
    from .._node import Node

MAX_WAITING_RUNS = 8  # runs queued for a slot before `runtime.run` answers busy
MAX_AIRDROP_LAMPORTS = 1_000 * 10**9
MAX_USAGE_DAYS = 3660
MAX_LAMPORTS = 10**15  # a price or budget, at most
DAY_S = 86_400


def refuse(status: int, code: str, message: str) -> ControlError:
    """A refusal of the facade's own, with the status and code the API answers."""
    return ControlError(message, status=status, code=code)


def decode_base64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error) as exc:
        raise refuse(400, "bad_body", f"{name!r} must be base64 text") from exc


def _lamports(value: int, name: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise refuse(400, "bad_body", f"{name} must be a whole number from {low} to {high}")
    return value


def _agent(agent: str) -> str:
    if agent.count("/") != 1 or len(agent) > 120:
        raise refuse(400, "bad_agent", "agent is PUBLISHER/NAME")
    return agent


async def _remote(call: Any) -> Any:
    """A remote query's failures: the peer's fault or unreachable is 502."""
    try:
        return await call
    except QueryError as exc:
        raise refuse(502, "bad_answer", str(exc)) from exc
    except RemoteError as exc:
        raise refuse(502, "refused", f"the peer refused ({exc.code}): {exc.message}") from exc
    except P2PError as exc:
        raise refuse(502, "unreachable", f"the peer did not answer: {exc}") from exc


class _Part:
    def __init__(self, node: Node) -> None:
        self._node = node

    async def reach(self, peer: str) -> str:
        """A peer id from a peer id or a full multiaddr (dialing the latter)."""
        try:
            if peer.startswith("/"):
                return await self._node.overlay.host.connect(peer)
            if len(b58decode(peer)) < 20:
                raise ValueError(peer)
        except (ValueError, BadAddress) as exc:
            raise refuse(
                400,
                "bad_peer",
                f"{peer[:100]!r} is neither a peer id nor a multiaddr "
                "like /ip4/HOST/tcp/PORT/p2p/PEER_ID",
            ) from exc
        except P2PError as exc:
            raise refuse(502, "unreachable", str(exc)) from exc
        return peer

    async def record(self, kind: str, data: dict[str, Any]) -> None:
        """Append to the event log, in the store's thread."""
        await self._node.store.run(self._node.events.record, kind, data)


class NodeOps(_Part):
    """The node itself: identity, status, keys, the event log, peers."""

    def health(self) -> m.Health:
        return m.Health(status="ok", version=__version__, instance=self._node.instance)

    def info(self) -> m.NodeInfo:
        node = self._node
        return m.NodeInfo(
            version=__version__,
            name=node.config.node.name,
            role=node.config.node.role,
            peer_id=node.peer_id,
            instance=node.instance,
            api=node.api_url,
            uptime_s=round(time.time() - node.started_at, 3),
        )

    async def status(self) -> m.Status:
        node = self._node
        seq, head = await node.store.run(event_head, node.store.db)
        accounts = await node.store.run(node.keys.account_names)
        registry_warnings = node.registry.warnings() if "registry" in node.services else []
        return m.Status(
            version=__version__,
            name=node.config.node.name,
            role=node.config.node.role,
            pid=os.getpid(),
            data_dir=str(node.datadir.root),
            started_at=node.started_at,
            uptime_s=round(time.time() - node.started_at, 3),
            peer_id=node.peer_id,
            accounts=accounts,
            api=node.api_url,
            services=list(node.services),
            events=m.EventCount(count=seq, head=head),
            p2p=node.overlay.status() if node.services and "p2p" in node.services else None,
            warnings=node.warnings + registry_warnings,
        )

    def shutdown(self) -> m.Stopping:
        self._node.request_stop("control API")
        return m.Stopping(status="stopping")

    def ui_login(self) -> m.UiLogin:
        """A one-time link that signs a browser in to the web app."""
        web = self._node.web
        if web is None or not self._node.api_url:
            raise refuse(503, "starting", "the node is still starting; try again in a moment")
        url = f"{self._node.api_url}/login?code={web.login_code()}"
        return m.UiLogin(url=url, expires_in_s=int(web.link_ttl_s))

    async def keys_list(self) -> m.Keys:
        keys = await self._node.store.run(self._node.keys.list_keys)
        return m.Keys(keys=[m.Key.model_validate(k.to_dict()) for k in keys])

    async def keys_new(self, name: str) -> m.Key:
        info = await self._node.store.run(self._node.keys.create_account, name)
        await self.record("key.created", {"name": name, "kind": "account", "address": info.address})
        return m.Key.model_validate(info.to_dict())

    async def keys_show(self, name: str) -> m.Key:
        info = await self._node.store.run(self._node.keys.info, name)
        return m.Key.model_validate(info.to_dict())

    async def events(self, after: int = 0, limit: int = 100, kind: str | None = None) -> m.Events:
        if not 0 <= after <= 2**62 or not 1 <= limit <= 1000:
            raise refuse(400, "bad_query", "after is 0 or more and limit from 1 to 1000")
        found = await self._node.store.run(list_events, self._node.store.db, after, limit, kind)
        return m.Events(
            events=[m.Event(**e.to_dict()) for e in found],
            next=found[-1].seq if found else after,
        )

    async def events_verify(self) -> m.EventsCheck:
        report = await self._node.store.run(verify_events, self._node.store.db)
        return m.EventsCheck(**report.to_dict())

    def peers(self) -> m.Peers:
        host = self._node.overlay.host
        return m.Peers(
            peers=[
                m.Peer(peer_id=p, addrs=host.peer_addrs(p), protocols=host.protocols_of(p))
                for p in host.connected_peers()
            ],
            banned=host.banned_peers(),
        )

    async def connect(self, peer: str) -> m.Connected:
        if not peer.startswith("/"):
            raise refuse(
                400, "bad_peer", "connect needs a multiaddr: /ip4/HOST/tcp/PORT/p2p/PEER_ID"
            )
        return m.Connected(peer_id=await self.reach(peer))

    async def ping(self, peer: str) -> m.Pong:
        peer_id = await self.reach(peer)
        try:
            rtts = await self._node.overlay.host.ping(peer_id, count=3)
        except P2PError as exc:
            raise refuse(502, "unreachable", str(exc)) from exc
        return m.Pong(peer_id=peer_id, rtt_ms=[round(r, 3) for r in rtts])

    async def metrics(self) -> str:
        text = await trio.to_thread.run_sync(self._node.metrics.render)  # reads /proc
        return text.decode()

    def config_text(self) -> str:
        """The effective configuration as mercato.toml text, for people; an RPC URL
        shows only its scheme, host and port (providers put API keys in the rest), a
        served model's backend its scheme, host, port and path."""
        config = self._node.config.to_dict()
        tables = [(name, values) for name, values in config.items() if name != "models"]
        tables += [(f"models.{name}", values) for name, values in config["models"].items()]
        lines: list[str] = []
        for section, values in tables:
            lines.append(f"[{section}]")
            for key, value in values.items():
                backend = section.startswith("models.") and key == "backend"
                if (section, key) == ("settlement", "rpc_url") or backend:
                    url = urlsplit(value)
                    value = f"{url.scheme}://{url.hostname}" + (f":{url.port}" if url.port else "")
                    value += url.path if backend else ""
                shown = f"# {key}: not set" if value is None else f"{key} = {json.dumps(value)}"
                lines.append(shown)
            lines.append("")
        return "\n".join(lines)


class RegistryOps(_Part):
    """The marketplace registry: publish, release, search, show, resolve."""

    def __init__(self, node: Node) -> None:
        super().__init__(node)
        self._releasing: dict[str, m.ReleaseProgress] = {}  # under way, by account/name@version
        self._spreads: dict[str, Spread] = {}

    async def publish(self, account: str, listing: dict[str, Any]) -> m.Listing:
        return m.Listing(**await self._node.registry.publish(account, listing))

    async def release(
        self,
        account: str,
        release: dict[str, Any],
        build: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> m.Released:
        """Bind ``name@version``, once and for all: to the cid in ``release``, or to
        ``build``, a file that must compile in the sandbox, and is then stored and
        spread to the peers responsible for it.

        Everything that can be refused is refused before anything is stored or
        sent: the fields, a listing this account has not published, a build that
        does not compile, a version bound to another build (ReleaseExists). With
        peers connected, the release is bound once ``[builds] min_copies`` of them
        (or all, if fewer) hold a copy; BuildError otherwise, saying what each
        peer answered (the build stays stored and offered). A lone node binds at
        once: its own copy is the only one, and peers fetch it as they join.
        ``progress`` hears each step, for a person watching; `releasing` shows
        the same while it runs."""
        say = progress or (lambda _text: None)
        registry = self._node.registry
        name, version = str(release.get("name", "")), str(release.get("version", ""))
        if build is not None and not build.is_absolute():
            raise refuse(400, "bad_body", '"build" is the absolute path of the build file')
        key = f"{account}/{name}@{version}"
        if key in self._releasing:
            raise refuse(409, "busy", f"{name}@{version} is being released already; wait for it")
        state = self._releasing[key] = m.ReleaseProgress(stage="checking")
        try:
            publisher = await registry.check_release(account, release, build is not None)
            if build is None:
                state.stage = "binding"
                shown = await registry.release(account, release)
                return _released(shown, publisher, version, None, [], 0)
            return await self._release_build(account, release, build, key, say)
        finally:
            del self._releasing[key]
            self._spreads.pop(key, None)

    async def _release_build(
        self, account: str, release: dict[str, Any], build: Path, key: str, say: Callable
    ) -> m.Released:
        registry, builds = self._node.registry, self._node.builds
        name, version = str(release["name"]), str(release["version"])
        state = self._releasing[key]
        say("checking that the build compiles in the sandbox")
        try:
            await self._node.runtime.check(build)
        except InvalidModule as exc:
            raise BuildError(f"{build} cannot be released: {exc}") from exc
        bound = await registry.bound_cid(account, name, version)
        if bound is not None:  # rare: hash the file first, to store nothing on a refusal
            try:
                cid = (await trio.to_thread.run_sync(manifest_of, build)).cid
            except OSError as exc:
                raise BuildError(f"cannot read {build}: {exc.strerror or exc}") from exc
            if cid != bound:
                raise ReleaseExists(f"{name}@{version}", bound, same=False)
        state.stage = "storing"
        info = await builds.add_file(build, True)
        state.cid, state.size = info.cid, info.size
        say(f"stored as {info.cid} ({info.size} bytes)")
        wanted = self._node.config.builds.min_copies
        peers = builds.possible_holders()  # the wait counts again, as peers come and go
        self._spreads[key] = spread = Spread(info.cid, min(wanted, peers), peers)
        state.stage = "copying"
        if wanted:
            say(f"spreading copies to the peers responsible for it: {wanted} needed")
        held = await builds.wait_for_copies(
            info.cid,
            wanted,
            self._node.config.builds.copies_wait_s,
            spread=spread,
            on_copies=lambda n: say(f"{n} of {spread.wanted} copies held"),
        )
        if spread.peers:
            say(f"held by {len(held)} peers")
        state.stage = "binding"
        binding = {**release, "cid": info.cid, "size": info.size}
        shown = await registry.release(account, binding)
        say(f"released {name}@{version}")
        builds.wake()
        note = ""
        if wanted and not spread.peers:
            note = (
                "no other peer is connected yet; copies will be made as peers join "
                "(this node must stay on until then)"
            )
        copies = 1 + len(held)  # this node's own, and the peers'
        return _released(shown, shown["publisher"], version, copies, held, spread.wanted, note)

    def releasing(self, account: str, name: str, version: str) -> m.ReleaseProgress:
        """How the release of ``name@version`` by ``account`` is going on this node
        (stage "none" if no such release is under way)."""
        key = f"{account}/{name}@{version}"
        state = self._releasing.get(key)
        if state is None:
            return m.ReleaseProgress(stage="none")
        if spread := self._spreads.get(key):
            state.copies, state.wanted = len(spread.held_by), spread.wanted
            state.peers, state.sent = spread.peers, spread.sent
        return state

    async def deprecate(self, account: str, name: str) -> m.Listing:
        return m.Listing(**await self._node.registry.deprecate(account, name))

    async def counts(self) -> dict[str, int]:
        """How many listings and publishers this node's registry holds."""
        return await self._node.registry.counts()

    async def digest(self) -> m.RegistryDigest:
        """The replica's anti-entropy digest: equal on two nodes iff they hold the
        same feeds at the same signed updates (what a chaos run compares)."""
        heads = await self._node.store.run(self._node.registry.replica.heads)
        return m.RegistryDigest(digest=sync_digest(heads).hex(), feeds=len(heads))

    async def search(self, query: Query, peer: str | None = None) -> m.SearchPage:
        """Search this node's registry, or ``peer``'s (a peer id or a multiaddr)."""
        query.check()
        if peer is not None:
            reached = await self.reach(peer)
            return m.SearchPage(**await _remote(self._node.registry.remote_search(reached, query)))
        return m.SearchPage(**await self._node.registry.search(query))

    async def show(self, publisher: str, name: str, peer: str | None = None) -> m.Listing:
        if peer is not None:
            reached = await self.reach(peer)
            found = await _remote(self._node.registry.remote_show(reached, publisher, name))
            where = "on that peer"
        else:
            found = await self._node.registry.show(publisher, name)
            where = "on this node"
        if found is None:
            raise refuse(404, "no_such_listing", f"no such listing {where}")
        return m.Listing(**found)

    async def resolve(self, ref: str, range_text: str = "*") -> m.Resolution:
        if ref.count("/") != 1 or len(ref) > 200:
            raise refuse(400, "bad_query", "ref must be PUBLISHER/NAME")
        publisher, _, name = ref.partition("/")
        listing = await self._node.registry.show(publisher, name)
        if not listing or not listing.get("plans"):
            return m.Resolution(**await self._node.registry.resolve(ref, range_text))
        # Sold by plan: the newest release in range that a licence held here covers.
        try:
            licence, version, upgrade = await self._node.tasks.runner.licence_for(
                ref, range_text, listing
            )
        except LicenceRequired as exc:
            found = await self._node.registry.resolve(ref, range_text)
            return m.Resolution(**found, licence="", licence_required=str(exc))
        found = await self._node.registry.resolve(ref, version)
        mint = licence.mint if licence else ""
        shown = m.Upgrade(**upgrade) if upgrade else None
        return m.Resolution(**{**found, "range": range_text}, licence=mint, upgrade=shown)


class RuntimeOps(_Part):
    """One-off runs of a module in the sandbox."""

    async def run(self, wasm: bytes, stdin: bytes, limits: dict[str, Any]) -> m.RunOutcome:
        node = self._node
        checked = Limits.from_wire(limits)
        caps = node.config.runtime
        if checked.memory_mb > caps.max_memory_mb:
            raise refuse(
                400, "bad_limits", f"memory_mb is capped at {caps.max_memory_mb} on this node"
            )
        if checked.timeout_s > caps.max_timeout_s:
            raise refuse(
                400, "bad_limits", f"timeout_s is capped at {caps.max_timeout_s:g} on this node"
            )
        if node.runtime.waiting >= MAX_WAITING_RUNS:
            raise refuse(503, "busy", "every runtime slot is busy and runs are queued; retry later")
        started = time.perf_counter()
        result = await node.runtime.run(wasm, stdin, checked)
        node.metrics.runtime_runs.labels(outcome=result.outcome.value).inc()
        node.metrics.runtime_seconds.observe(time.perf_counter() - started)

        def encode() -> m.RunOutcome:  # outputs may be megabytes: off the event loop
            wire = result.to_wire()
            wire["output"] = base64.b64encode(result.output).decode()
            wire["stderr"] = base64.b64encode(result.stderr).decode()
            return m.RunOutcome(**wire)

        return await trio.to_thread.run_sync(encode)


class BuildOps(_Part):
    """Builds stored on this node, and fetches from peers."""

    async def stored(self) -> m.Builds:
        store = self._node.builds.builds
        infos = await self._node.store.run(store.list_builds)
        used = await self._node.store.run(store.used_bytes)
        return m.Builds(
            builds=[m.Build(**i.to_dict()) for i in infos],
            used_bytes=used,
            quota_bytes=store.quota_bytes,
        )

    async def add(self, path: Path, pin: bool = True) -> m.Build:
        if not path.is_absolute():
            raise refuse(400, "bad_body", 'expected {"path": "/absolute/path/to/build.wasm"}')
        info = await self._node.builds.add_file(path, pin)
        await self.record("builds.added", {"cid": info.cid, "size": info.size})
        return m.Build(**info.to_dict())

    async def fetch(self, cid: str, peers: list[str] | None = None, pin: bool = False) -> m.Fetch:
        """Start fetching ``cid`` in the background; its progress is in `progress`."""
        reached = [await self.reach(p) for p in peers] if peers is not None else None
        state = self._node.builds.start_fetch(cid, reached, pin)
        return m.Fetch.model_validate(state.to_dict())

    async def progress(self, cid: str) -> m.BuildProgress:
        check_cid(cid)
        state = self._node.builds.fetches.get(cid)
        info = await self._node.store.run(self._node.builds.builds.info, cid)
        if state is None and info is None:
            raise refuse(404, "no_such_build", f"no build {cid} here and no fetch of it")
        return m.BuildProgress(
            fetch=m.Fetch.model_validate(state.to_dict()) if state else None,
            build=m.Build(**info.to_dict()) if info else None,
        )

    async def pin(self, cid: str, pinned: bool = True) -> m.Pinned:
        check_cid(cid)
        await self._node.store.run(self._node.builds.builds.pin, cid, pinned)
        return m.Pinned(cid=cid, pinned=pinned)

    async def verify(self, cid: str) -> m.Verified:
        check_cid(cid)
        bad = await self._node.store.run(self._node.builds.builds.verify, cid)
        return m.Verified(cid=cid, damaged_chunks=bad)

    async def gc(self) -> m.Collected:
        builds = self._node.builds
        removed = await self._node.store.run(builds.builds.gc, builds.keep())
        return m.Collected(removed=removed)

    async def responsible(self) -> list[str]:
        """The released builds this node keeps for the network: it is among the
        ``[builds] replicas`` live peers closest to each."""
        node, builds = self._node, self._node.builds
        released = await node.store.run(node.registry.replica.release_cids)
        peers, replicas = builds.live_peers(), builds.config.replicas
        return sorted(
            cid
            for cid in released
            if cid.startswith("bld-") and node.peer_id in responsible(cid, peers, replicas)
        )


def _released(
    shown: dict[str, Any],
    publisher: str,
    version: str,
    copies: int | None,
    held_by: list[str],
    wanted: int,
    note: str = "",
) -> m.Released:
    """The listing after a release, with what the release did."""
    releases = shown.get("releases", [])
    bound: dict[str, Any] = next((r for r in releases if r.get("version") == version), {})
    outcome = m.ReleaseOutcome(
        publisher=publisher,
        name=str(shown.get("name", "")),
        version=version,
        cid=str(bound.get("cid", "")),
        size=int(bound.get("size", 0)),
        copies=copies,
        held_by=sorted(held_by),
        wanted=wanted,
        note=note,
    )
    return m.Released(**shown, released=outcome)


def _json_safe(value: Any) -> Any:
    """A decoded CBOR value as JSON: bytes as hex, containers converted throughout."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return _json_body(value)
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _json_body(body: dict[Any, Any]) -> dict[str, Any]:
    return {str(key): _json_safe(value) for key, value in body.items()}


def _receipt_body(receipt: Receipt) -> dict[str, Any]:
    """A task receipt's signed body, its sub-calls (if it lists any) decoded into a
    list of maps; BadReceipt if they do not decode."""
    body = receipt.body()
    if "subcalls" in body:
        body["subcalls"] = [dataclasses.asdict(c) for c in decode_subcalls(receipt.subcalls)]
    return body


def _receipt_json(receipt: Receipt) -> dict[str, Any]:
    return _json_body(_receipt_body(receipt))


def _task_receipt(data: bytes) -> dict[str, Any]:
    return _receipt_body(Receipt.verify(data))


ReceiptReader = Callable[[bytes], dict[str, Any]]
"""Checks a signed receipt of one kind and returns its body; a NodeError (such as
BadReceipt) if it is none."""


def _call_receipt(data: bytes) -> dict[str, Any]:
    return dataclasses.asdict(InferReceipt.verify(data))


def _any_receipt(data: bytes) -> Any:
    """A task's or a model call's receipt, checked (for `prove`)."""
    try:
        return Receipt.verify(data)
    except BadReceipt:
        return InferReceipt.verify(data)


RECEIPT_READERS: tuple[ReceiptReader, ...] = (_task_receipt, _call_receipt)
"""The kinds of signed receipt the task log holds, tried in order: an agent's
task receipt, then a model call's. A receipt none of them checks is shown
unchecked, with ``receipt_error`` saying so."""


def receipt_json(data: bytes) -> dict[str, Any]:
    """A stored signed receipt's body, JSON-safe (bytes as hex), checked by the
    first of RECEIPT_READERS that takes it; BadReceipt (saying why the first one
    refused it) if none does."""
    errors: list[NodeError] = []
    for read in RECEIPT_READERS:
        try:
            return _json_body(read(data))
        except NodeError as exc:
            errors.append(exc)
    raise BadReceipt(str(errors[0])) from errors[0]


def _unchecked_body(data: bytes) -> dict[str, Any] | None:
    """The body of a signed object (canonical CBOR ``{"body": ..., "sig": ...}``)
    as it decodes, without checking it; None if it does not decode so."""
    try:
        body = decode_canonical(data)["body"]
    except (FrameError, KeyError, TypeError):
        return None
    return _json_body(body) if isinstance(body, dict) else None


def _task_side(record: TaskRecord, full: bool) -> m.TaskSide:
    out = dataclasses.asdict(record)
    signed = out.pop("receipt")
    if full and signed is not None:
        try:  # checked again: the file could have been tampered with
            out["receipt"] = receipt_json(signed)
            out["subcalls"] = _logged_subcalls(signed)
        except BadReceipt as exc:
            out["receipt_error"] = f"{exc} (the receipt is shown unchecked)"
            out["receipt"] = _unchecked_body(signed)
        out["receipt_signed"] = base64.b64encode(signed).decode()
    return m.TaskSide(**out)


def _logged_subcalls(signed: bytes) -> list[m.SubCallView]:
    """The sub-calls a task log's receipt lists: none for a model call's receipt."""
    try:
        receipt = Receipt.verify(signed)
    except BadReceipt:
        return []
    return subcall_views(decode_subcalls(receipt.subcalls))


_SUBCALL_RECEIPTS: dict[str, Callable[[bytes], Any]] = {
    "call": Receipt.verify,
    "infer": InferReceipt.verify,
}
"""How to check the signed receipt of each kind of sub-call, for its provider."""


def subcall_views(calls: list[SubCall]) -> list[m.SubCallView]:
    """A receipt's sub-calls as the API shows them: the status named, and the
    provider each sub-receipt is signed by ("" if none came or it does not verify)."""
    return [
        m.SubCallView(
            op=c.op,
            target=c.target,
            status=c.status,
            status_name=status_name(c.status),
            error=c.error,
            cost=c.cost,
            provider=_subcall_provider(c),
            receipt_signed=base64.b64encode(c.receipt).decode(),
        )
        for c in calls
    ]


def status_name(status: int) -> str:
    """``ok`` for 0, else the `HostStatus`'s name in lower case (``unknown`` if none)."""
    if status == 0:
        return "ok"
    try:
        return HostStatus(status).name.lower()
    except ValueError:
        return "unknown"


def _subcall_provider(call: SubCall) -> str:
    verify = _SUBCALL_RECEIPTS.get(call.op)
    if not call.receipt or verify is None:
        return ""
    try:
        return str(verify(call.receipt).provider)
    except NodeError:  # BadReceipt: shown without a provider rather than trusted
        return ""


def _request_hash(
    agent: str,
    version: str,
    stdin: bytes,
    provider: str | None,
    max_price: int | None,
    budget: int | None = None,
) -> str:
    """What an idempotency key stands for: the run's arguments, canonically hashed
    (a run without a budget hashes as it did before budgets)."""
    asked = {
        "agent": agent,
        "version": version,
        "input": hashlib.sha256(stdin).hexdigest(),
        "provider": provider,
        "max_price": max_price,
        **({"budget": budget} if budget is not None else {}),
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _check_lamports(value: int | None, name: str, what: str) -> None:
    """400 ``bad_body`` unless ``value`` is None or a whole number of lamports in range."""
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_LAMPORTS):
        raise refuse(
            400,
            "bad_body",
            f"{name} is a whole number of lamports from 0 to {MAX_LAMPORTS}: {what}",
        )


_ROLES = ("user", "provider")


class TaskOps(_Part):
    """Running agents on providers, and the task log.

    Runs obey ``[spending]``: what a run may pay is weighed against
    ``max_per_task``, ``approve_above`` (unless the run is ``approved``) and what
    is left today under ``max_per_day`` (today's payments and what the runs in
    flight may still pay counted). That is its ``budget`` when it has one (the
    most the whole run may cost, a composite agent's sub-calls included), else
    ``max_price``, else the listed price. A run that cannot fit is refused 403:
    ``over_task_limit``, ``daily_limit`` or ``approval_needed``; one over what is
    left today but for its price runs with what is left. Free runs (nothing
    asked) are never refused by them.
    """

    async def providers(self, agent: str, look_up: bool = True) -> m.Providers:
        """Live providers of ``agent``, best first. Asking follows the agent; the
        first time (``look_up``) its providers are looked up before the answer,
        else the answer is what this node knows now."""
        ref = _agent(agent)
        tasks = self._node.tasks
        found = await tasks.find_providers(ref) if look_up else tasks.providers(ref)
        return m.Providers(agent=agent, providers=found)

    async def run(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None = None,
        max_price: int | None = None,
        approved: bool = False,
        idempotency_key: str | None = None,
        budget: int | None = None,
    ) -> m.TaskDone:
        """Run ``agent`` on the best provider that quotes (or ``provider``), paying
        through a channel when it has a price; the output and receipt are verified.

        ``budget``: the most the whole run may cost (lamports), a composite agent's
        sub-calls included; without one it may cost its price alone, and only free
        sub-calls succeed. ``approved``: a human confirmed this run (it may cost
        more than ``approve_above``). ``idempotency_key``: a retry with the same key
        and arguments (budget included) within 24 h returns the first run's result
        (waiting for it if it still runs) and never runs or pays again; with other
        arguments it is refused 409 ``idempotency_conflict``. A run that failed is
        not kept. 400 ``bad_body`` for a max_price or budget out of range."""
        _agent(agent)
        _check_lamports(max_price, "max_price", "what one run's price may be")
        _check_lamports(budget, "budget", "the most the whole run may cost, sub-calls included")
        asked = (agent, version, stdin, provider, max_price, approved, budget)
        if idempotency_key is None:
            return await self._run(*asked)
        if not re.fullmatch(m.IDEMPOTENCY_KEY, idempotency_key):
            raise refuse(
                400, "bad_body", "idempotency_key is 1 to 128 characters of A-Z a-z 0-9 . _ : -"
            )
        request = await trio.to_thread.run_sync(  # the input may be megabytes
            _request_hash, agent, version, stdin, provider, max_price, budget
        )

        async def first() -> str:
            done = await self._run(*asked)
            return done.model_dump_json()

        kept = await self._node.tasks.run_keys.once(idempotency_key, request, first)
        return m.TaskDone.model_validate_json(kept)

    async def _run(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None,
        max_price: int | None,
        approved: bool,
        budget: int | None,
    ) -> m.TaskDone:
        chosen = await self.reach(provider) if provider is not None else None
        tasks = self._node.tasks
        cap, most, held = await self._admit(agent, max_price, approved, budget)
        try:
            done = await tasks.run_task(agent, version, stdin, chosen, cap, held, most)
        finally:
            tasks.spending.release(held)
        await self.record(
            "task.completed", {"agent": agent, "provider": done["provider"], "task": done["task"]}
        )
        receipt: Receipt = done["receipt"]
        return m.TaskDone(
            task=done["task"],
            output=base64.b64encode(done["output"]).decode(),
            provider=done["provider"],
            receipt=_receipt_json(receipt),
            verified=done["verified"],
            cost=receipt.cost,
            subcalls=subcall_views(done.get("subcalls") or []),
            attempts=done["attempts"],
            licence=done.get("licence") or "",
            upgrade=_upgrade(done.get("upgrade")),
        )

    async def _admit(
        self, agent: str, max_price: int | None, approved: bool, most: int | None = None
    ) -> tuple[int | None, int | None, Budget]:
        """The price a run may pay (its cap), what it may cost in all (``most``: a
        composite agent's sub-calls included; None: its price alone), and its
        budget, reserved against the day's limit (`release` it when the run ends);
        refuse a run the limits do not allow."""
        limits = self._node.config.spending
        publisher, _, name = agent.partition("/")
        listing = await self._node.registry.show(publisher, name)
        listed = int(listing["price"]) if listing and not listing.get("deprecated") else None
        # What the run may pay without limits: its budget, else max_price, else the
        # listed price (else nothing: the runner pays nothing for a listing it does
        # not know).
        if most is not None:
            asked, what = most, f"the budget of {most}"
        elif max_price is not None:
            asked, what = max_price, f"max_price {max_price}"
        else:
            asked = listed or 0
            what = f"{agent} costs {asked}"
        if limits.max_per_task is not None and asked > limits.max_per_task:
            raise refuse(
                403,
                "over_task_limit",
                f"{what} lamports, over this node's limit of {limits.max_per_task} lamports "
                "a task ([spending] max_per_task)",
            )
        if not approved and limits.approve_above is not None and asked > limits.approve_above:
            raise refuse(
                403,
                "approval_needed",
                f"{what} lamports: a human must confirm runs above {limits.approve_above} "
                "lamports ([spending] approve_above). Get a quote (POST /v1/tasks/quote), ask "
                "your user, then run again with approved=true, the quote's provider and "
                "max_price set to its price" + (" and the same budget" if most is not None else ""),
            )
        spending = self._node.tasks.spending
        if limits.max_per_day is None or asked == 0:  # free runs are never refused
            return _capped(max_price, most), most, Budget(None)
        async with spending.lock:  # read what is spent and reserved, and reserve, at once
            spent, reserved = await spending.totals(time.time())
            left = max(limits.max_per_day - spent - reserved, 0)
            if left == 0 or (listed is not None and listed > left):
                costs = f"{agent} costs {listed} lamports a task; " if listed else ""
                raise refuse(
                    403,
                    "daily_limit",
                    f"{costs}{left} lamports left today; the limit is {limits.max_per_day} "
                    "(resets at 00:00 UTC)",
                )
            budget = Budget(min(asked, left))
            spending.hold(budget)
        if most is None:
            return budget.limit, None, budget
        return _capped(max_price, budget.limit), budget.limit, budget

    async def quote(
        self,
        agent: str,
        version: str = "*",
        input_size: int = 0,
        provider: str | None = None,
        budget: int | None = None,
    ) -> m.TaskQuote:
        """The best quote a run of ``agent`` would take now, asked as a run asks (a
        run soon after reuses it; with the same ``budget``, for a composite
        agent's sub-calls), and whether running it needs a human's approval: what
        it may cost in all (its ``most``) is over ``approve_above``, or the budget
        is, which a run is weighed by."""
        _agent(agent)
        if type(input_size) is not int or not 0 <= input_size <= 2**40:
            raise refuse(400, "bad_body", "input_size is a whole number of bytes, 0 or more")
        _check_lamports(budget, "budget", "the most the whole run may cost, sub-calls included")
        chosen = await self.reach(provider) if provider is not None else None
        quote = await self._node.tasks.best_quote(agent, version, input_size, chosen, budget)
        limits = self._node.config.spending
        shown = await self.spending()
        return m.TaskQuote(
            agent=quote.agent,
            version=quote.version,
            cid=quote.cid,
            provider=quote.provider,
            price=quote.price,
            subcalls_max=quote.subcalls_max,
            most=quote.most,
            expected_ms=quote.expected_ms,
            load=quote.load,
            creator=quote.creator,
            royalty_bps=quote.royalty_bps,
            expires=quote.expires,
            needs_approval=limits.approve_above is not None
            and max(quote.most, budget or 0) > limits.approve_above,
            left_today=shown.left_today,
        )

    async def spending(self) -> m.Spending:
        """What this node's tasks paid today (UTC), what runs in flight may still
        pay, what is left under the daily limit, and the limits."""
        limits = self._node.config.spending
        spending = self._node.tasks.spending
        now = time.time()
        async with spending.lock:
            spent, reserved = await spending.totals(now)
        left = None if limits.max_per_day is None else max(limits.max_per_day - spent - reserved, 0)
        return m.Spending(
            day=datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat(),
            spent_today=spent,
            reserved=reserved,
            left_today=left,
            max_per_task=limits.max_per_task,
            max_per_day=limits.max_per_day,
            approve_above=limits.approve_above,
        )

    async def recent(self, limit: int = 50, role: str | None = None) -> m.Tasks:
        if role not in (None, "user", "provider"):
            raise refuse(400, "bad_query", "role is user or provider")
        if not 1 <= limit <= 10_000:
            raise refuse(400, "bad_query", "limit is from 1 to 10000")
        records = await self._node.tasks.tasklog.recent(limit, role)
        return m.Tasks(tasks=[_task_side(r, full=False) for r in records])

    async def usage(self, days: int = 30, by: str = "agent") -> m.Usage:
        """What this node spent as a user and earned as a provider over the last
        ``days``: calls, calls ok, tokens in and out and lamports per side and
        listing (a model's or an agent's), per provider too with ``by="provider"``,
        and per side."""
        if type(days) is not int or not 1 <= days <= MAX_USAGE_DAYS:
            raise refuse(400, "bad_query", f"days is a whole number from 1 to {MAX_USAGE_DAYS}")
        if by not in ("agent", "provider"):
            raise refuse(400, "bad_query", "by is agent (the default) or provider")
        since = round(time.time() - days * DAY_S, 3)
        rows = await self._node.tasks.tasklog.usage(since, by_provider=by == "provider")
        totals = {role: dict.fromkeys(m.UsageCounts.model_fields, 0) for role in _ROLES}
        for row in rows:
            if (total := totals.get(row["role"])) is not None:
                for key in total:
                    total[key] += row[key]
        return m.Usage(
            days=days,
            since=since,
            usage=[m.UsageByProvider(**r) if "provider" in r else m.UsageRow(**r) for r in rows],
            totals=m.UsageTotals(**{r: m.UsageCounts(**t) for r, t in totals.items()}),
        )

    async def show(self, task_id: str) -> m.Task:
        task_id = await self._known(task_id)
        records = await self._node.tasks.tasklog.get(task_id)
        return m.Task(task=task_id, sides=[_task_side(r, True) for r in records])

    async def prove(self, task_id: str) -> m.Proof:
        """That the receipt of a paid task this node ran is settled by its channel's
        close: the closing transaction on the ledger, the receipts commitment in its
        memo, and the receipt's Merkle path, checked here against it (``verified``;
        ``reason`` says why not). 409 ``no_proof`` while there is nothing to check it
        against (a free task, a channel still open); the embedded ledger keeps no
        history to find the close in."""
        task_id = await self._known(task_id)
        tasks = self._node.tasks
        proof = await prove_receipt(tasks.tasklog, self._node.settlement, task_id, _any_receipt)
        return m.Proof(**proof)

    async def _known(self, task_id: str) -> str:
        """A task id of this node's task log, in lower case; refused 400 or 404."""
        task_id = task_id.lower()
        if len(task_id) != 32 or any(c not in "0123456789abcdef" for c in task_id):
            raise refuse(400, "bad_task", "a task id is 32 hex digits (see `mercato tasks ls`)")
        if not await self._node.tasks.tasklog.get(task_id):
            raise refuse(404, "unknown_task", f"this node has no task {task_id}")
        return task_id


def _capped(max_price: int | None, most: int | None) -> int | None:
    """The price a run may pay: ``max_price``, and never more than ``most``, what
    it may cost in all (None: no bound)."""
    if most is None:
        return max_price
    return most if max_price is None else min(max_price, most)


def _upgrade(found: dict[str, Any] | None) -> m.Upgrade | None:
    """The runner's word on a newer release the licence used does not cover."""
    if not found:
        return None
    keys = ("name", "kind", "price", "versions")
    plans = [m.UpgradePlan(**{k: p[k] for k in keys}) for p in found.get("plans", [])]
    return m.Upgrade(version=found["version"], plans=plans)


class MoneyOps(_Part):
    """The wallet and payment channels."""

    async def wallet(self) -> m.Wallet:
        return m.Wallet(**await self._node.settlement.wallet_info(self._assets()))

    async def airdrop(self, lamports: int) -> m.Airdropped:
        _lamports(lamports, "lamports", 1, MAX_AIRDROP_LAMPORTS)
        signature = await self._node.settlement.airdrop(lamports)
        wallet = await self._node.settlement.wallet_info(self._assets())
        return m.Airdropped(signature=str(signature), **wallet)

    def _assets(self) -> list[Pubkey]:
        """The mints whose balances the wallet shows beyond the test mint's."""
        try:
            return [Pubkey.from_string(asset)] if (asset := self._node.config.gateway.asset) else []
        except ValueError:  # base58 but not 32 bytes: the gateway says so where it uses it
            return []

    def channels(self) -> m.Channels:
        return m.Channels(channels=[m.Channel(**c) for c in self._node.settlement.channels()])

    def _stake(self, stake: str) -> str:
        if stake not in self._node.settlement.book.channels:
            raise refuse(404, "no_such_channel", f"no channel {stake} in this node's book")
        return stake

    def channel(self, stake: str) -> m.Channel:
        book = self._node.settlement.book
        return m.Channel(**channel_info(book.get(self._stake(stake))))

    async def open(
        self, peer: str, deposit_lamports: int, duration_s: int, payee: str | None = None
    ) -> m.Channel:
        """Open a channel to ``peer`` paying ``payee`` (default: its agent card's wallet)."""
        try:
            public_key_of_peer(peer)
        except Exception as exc:  # whatever a string that is no peer id makes it raise
            raise refuse(400, "bad_body", "peer must be a peer id (12D3KooW...)") from exc
        deposit = _lamports(deposit_lamports, "deposit_lamports", 1, 10**15)
        duration = _lamports(duration_s, "duration_s", 600, 366 * 86_400)
        tasks = self._node.tasks
        if not tasks.cards.wallet_of(peer):  # a provider of nothing this node follows
            await tasks.exchange.card_of(peer, self._node.overlay.host.peer_addrs(peer))
        advertised = tasks.cards.wallet_of(peer)
        payee = payee or advertised
        if advertised and payee != advertised:
            raise refuse(
                409, "bad_channel", f"{peer}'s agent card names wallet {advertised}, not {payee}"
            )
        if not payee:
            raise refuse(
                404,
                "no_wallet",
                f"{peer} has no live agent card naming its wallet: give its address as payee",
            )
        try:
            payee_key = Pubkey.from_string(payee)
        except (TypeError, ValueError) as exc:
            raise refuse(400, "bad_body", "payee must be a base58 Solana address") from exc
        money = self._node.settlement
        channel = await money.open_channel(peer, payee_key, deposit, duration)
        return m.Channel(**channel_info(channel))

    async def close(self, stake: str) -> m.Settled:
        channel, signature = await self._node.settlement.close_channel(self._stake(stake))
        return m.Settled(**channel_info(channel), signature=str(signature))

    async def refund(self, stake: str) -> m.Settled:
        channel, signature = await self._node.settlement.refund_channel(self._stake(stake))
        return m.Settled(**channel_info(channel), signature=str(signature))


_LISTING_REF = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}/[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_MINT = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")


class CommerceOps(_Part):
    """Licences and subscriptions: buying and refunding them, and what this node sold.

    A purchase or refund is made with the creator's node, which must be online;
    the facade checks the arguments' form, `CommerceService` everything else."""

    async def buy(self, agent: str, plan: str, approved: bool = False) -> m.Licence:
        """Buy ``plan`` of ``agent`` (PUBLISHER/NAME); the licence once it is on the
        ledger. The ``[spending]`` policy holds as for runs: a price above
        ``approve_above`` needs ``approved`` (a human confirmed it), and the price
        counts against ``max_per_day``."""
        if not _LISTING_REF.fullmatch(agent):
            raise refuse(
                400, "bad_agent", "agent is PUBLISHER/NAME: a base58 address, '/', a listing's name"
            )
        if not re.fullmatch(m.PLAN_NAME, plan):
            raise refuse(
                400,
                "bad_plan",
                "plan is a plan's name: up to 32 of a-z, 0-9 and '-' (`mercato show` lists them)",
            )
        price = await self._plan_price(agent, plan)
        limits = self._node.config.spending
        if not approved and limits.approve_above is not None and price > limits.approve_above:
            raise refuse(
                403,
                "approval_needed",
                f"the plan {plan} costs {price} lamports: a human must confirm purchases above "
                f"{limits.approve_above} lamports ([spending] approve_above); ask your user, "
                "then buy again with approved=true",
            )
        spending = self._node.tasks.spending
        budget = Budget(None)
        if limits.max_per_day is not None and price:
            async with spending.lock:  # read what is spent and reserved, and reserve, at once
                spent, reserved = await spending.totals(time.time())
                left = max(limits.max_per_day - spent - reserved, 0)
                if price > left:
                    raise refuse(
                        403,
                        "daily_limit",
                        f"the plan {plan} costs {price} lamports; {left} lamports left today; "
                        f"the limit is {limits.max_per_day} (resets at 00:00 UTC)",
                    )
                budget = Budget(price)
                spending.hold(budget)
        try:
            row = await self._node.commerce.buy(agent, plan, max_price=price)
            publisher = agent.partition("/")[0]
            await spending.record(row.price, publisher, f"licence:{row.mint}", budget)
        finally:
            spending.release(budget)
        return m.Licence(**row.view())

    async def _plan_price(self, agent: str, plan: str) -> int:
        publisher, _, name = agent.partition("/")
        listing = await self._node.registry.show(publisher, name)
        plans = (listing or {}).get("plans") or {}
        return int(plans[plan]["price"]) if plan in plans else 0  # unknown: the service says

    async def licences(self) -> m.Licences:
        """The licences and subscriptions this node's wallet bought, newest first."""
        await self._node.commerce.settle_pending()
        rows = await self._node.commerce.held.all()
        return m.Licences(licences=[m.Licence(**r.view()) for r in rows])

    async def refund(self, mint: str) -> m.Licence:
        """Ask the creator's node to refund the licence ``mint``, within its refund window."""
        if not _MINT.fullmatch(mint):
            raise refuse(
                400,
                "bad_mint",
                "a licence is named by its mint, a base58 address (`mercato licences`)",
            )
        row = await self._node.commerce.refund(mint)
        return m.Licence(**row.view())

    async def sales(self) -> m.Sales:
        """The licences this node's creators sold, newest first, and totals per plan."""
        sold = self._node.commerce.sold
        rows, totals = await sold.all(), await sold.totals()
        return m.Sales(
            sales=[m.Licence(**r.view()) for r in rows],
            totals=[m.SaleTotal(**t) for t in totals],
        )


class EarningsOps(_Part):
    """What this node earned serving others: per listing and per channel paid on."""

    async def earnings(self, days: float | None = None, since: float | None = None) -> m.Earnings:
        """Over the last ``days`` (default 30), or since ``since`` (unix seconds)."""
        now = time.time()
        if since is None:
            days = 30 if days is None else days
            if not 0 < days <= MAX_USAGE_DAYS:
                raise refuse(400, "bad_query", f"days is over 0 and at most {MAX_USAGE_DAYS}")
            since = round(now - days * DAY_S, 3)
        elif days is not None:
            raise refuse(400, "bad_query", "give days or since, not both")
        elif not 0 <= since <= now:
            raise refuse(400, "bad_query", "since is a moment in the past, in unix seconds")
        tasks, money = self._node.tasks, self._node.settlement
        served = [
            ServedTask(agent, status, price, _receipt_channel(receipt))
            for agent, status, price, receipt in await tasks.tasklog.served(since)
        ]
        listings: dict[str, tuple[str, int]] = {}
        for agent in {t.agent for t in served}:
            publisher, _, name = agent.partition("/")
            shown = await self._node.registry.show(publisher, name)
            if shown is not None:
                listings[agent] = (str(shown["publisher"]), int(shown.get("royalty_bps", 0)))
        found = earnings(served, listings, money.book, money.wallet.pubkey(), since)
        return m.Earnings(days=round((now - since) / DAY_S, 3), wallet=money.address, **found)


def _receipt_channel(signed: bytes | None) -> str:
    """The channel a served task's receipt names ("" for a free one, or none)."""
    body = _unchecked_body(signed) if signed else None
    return str(body.get("channel", "")) if body else ""


class NodeAPI:
    """Every operation of a running node; see the module docstring."""

    def __init__(self, node: Node) -> None:
        self.node = NodeOps(node)
        self.registry = RegistryOps(node)
        self.builds = BuildOps(node)
        self.runtime = RuntimeOps(node)
        self.tasks = TaskOps(node)
        self.money = MoneyOps(node)
        self.commerce = CommerceOps(node)
        self.models = ModelOps(node)
        self.earnings = EarningsOps(node)
