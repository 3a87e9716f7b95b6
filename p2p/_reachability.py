"""``/mercato/dialback/1.0.0``: whether this node can be reached from outside.

Our AutoNAT. py-libp2p's own counts any inbound connection as proof, which
says nothing about a node behind NAT that only dialed out; this check has a
peer open a fresh connection instead.

Flow: the client sends `DialBackRequest` with the TCP ports it listens on.
The server takes the IP that the request's connection comes from (a relayed
connection has none: refused with ``relayed``), opens a new TCP connection to
that IP on each port, sends the multistream-select header and expects it back
(any libp2p listener answers it; a closed port, a filter or another service
does not), and answers `DialBackResponse` with the ports that answered and the
IP it saw.

Abuse: the server dials only the requester's own IP, so it cannot be aimed at
a third party; at most MAX_PORTS ports per request, DIALS_AT_ONCE checks at
once in all (more are refused ``busy``), and the request framework's per-peer
rate limit.

`Reachability` runs the check from the client side: it asks up to
``checkers`` connected peers (bootstrap peers first) once a peer that serves
the protocol is connected, then every ``recheck_s`` (sooner, from 2 s
doubling to ``retry_s``, while it has no answer or no relay to use). The node is ``public``
when more than half of the answers reached it, ``unreachable`` otherwise.
An unreachable node (not a relay itself) takes reservations on up to
``max_relays`` connected relays, bootstrap relays first, and advertises the
relayed addresses; a node found public again drops them. Cancellation stops
the loop; no error escapes it (a failed round is retried after ``retry_s``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from ._messages import Message
from ._requests import Refused, RequestProtocol, Requests

log = logging.getLogger("mercato.p2p.reachability")

MAX_PORTS = 4
DIALS_AT_ONCE = 8
DIAL_TIMEOUT_S = 3.0
MULTISTREAM = b"\x13/multistream/1.0.0\n"
HOP = "/libp2p/circuit/relay/0.2.0/hop"


@dataclass(frozen=True)
class DialBackRequest(Message):
    TYPE: ClassVar[str] = "dialback.request"
    ports: list[int] = field(metadata={"max_len": MAX_PORTS})


@dataclass(frozen=True)
class DialBackResponse(Message):
    TYPE: ClassVar[str] = "dialback.response"
    observed: str = field(metadata={"max_len": 64})
    reached: list[int] = field(metadata={"max_len": MAX_PORTS})


DIALBACK = RequestProtocol(
    "/mercato/dialback/1.0.0",
    DialBackRequest,
    DialBackResponse,
    max_request_bytes=128,
    max_response_bytes=256,
    timeout_s=DIAL_TIMEOUT_S * MAX_PORTS + 2.0,
    rate_per_s=0.5,
)


@dataclass(frozen=True)
class ReachabilityConfig:
    checkers: int = 3
    """Peers asked in each round."""
    recheck_s: float = 600.0
    retry_s: float = 30.0
    """At most this long after a round that got no answer or found no relay to use
    (2 s after the first such round, doubling)."""
    max_relays: int = 2
    """Relays an unreachable node holds a reservation on."""


@dataclass(frozen=True)
class Verdict:
    state: str
    """``public``, ``unreachable`` or ``unknown`` (not checked, or no answer)."""
    checked_by: tuple[str, ...] = ()
    observed: tuple[str, ...] = ()
    """The IPs the checkers saw this node come from."""
    at: float = 0.0


class DialBack:
    """The server side: dial a requester back (see the module docstring)."""

    def __init__(self, host: Any) -> None:
        self._host = host  # P2PHost
        self._slots = trio.Semaphore(DIALS_AT_ONCE)

    async def answer(self, peer: str, request: DialBackRequest) -> DialBackResponse:
        ip = self._host.observed_ip(peer)
        if ip is None:
            raise Refused("relayed", "you reach this node through a relay; ask a direct peer")
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock as exc:
            raise Refused("busy", "too many dial-backs at once; retry later") from exc
        try:
            ports = sorted({p for p in request.ports if 0 < p < 65536})
            reached = [port for port in ports if await _answers(ip, port)]
        finally:
            self._slots.release()
        return DialBackResponse(observed=ip, reached=reached)


async def _answers(ip: str, port: int) -> bool:
    """Whether a libp2p listener answers on ip:port over a fresh TCP connection."""
    with trio.move_on_after(DIAL_TIMEOUT_S):
        try:
            stream = await trio.open_tcp_stream(ip, port)
        except OSError:
            return False
        async with stream:
            got = b""
            try:
                await stream.send_all(MULTISTREAM)
                while len(got) < len(MULTISTREAM):
                    chunk = await stream.receive_some(len(MULTISTREAM) - len(got))
                    if not chunk:
                        break
                    got += chunk
            except (OSError, trio.BrokenResourceError):
                return False
            return got == MULTISTREAM
    return False


class Reachability:
    """The client side: find out, and use relays when unreachable."""

    def __init__(
        self,
        host: Any,
        requests: Requests,
        relay: Any,
        config: ReachabilityConfig,
        bootstrap: tuple[str, ...] = (),
        *,
        hop: bool = False,
    ) -> None:
        self._host = host  # P2PHost
        self._requests = requests
        self._relay = relay  # Relay
        self.config = config
        self._bootstrap = bootstrap
        self._hop = hop
        self.verdict = Verdict("unknown")

    def ports(self) -> list[int]:
        """The TCP ports of this node's direct addresses."""
        ports = set()
        for addr in self._host.listen_addrs():
            parts = addr.strip("/").split("/")
            if "p2p-circuit" not in parts and len(parts) >= 4 and parts[2] == "tcp":
                ports.add(int(parts[3]))
        return sorted(ports)[:MAX_PORTS]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Check now and then, until cancelled; a node with no direct address never does."""
        task_status.started()
        if not self.ports():
            await trio.sleep_forever()
        while not self._checkers():  # noqa: ASYNC110 - no event for "a peer identified"
            await trio.sleep(0.5)
        unsettled = 0
        while True:
            try:
                await self.check()
                settled = await self._apply()
            except Exception as exc:  # a round's trouble must never end the node
                log.warning("reachability check failed", extra={"error": repr(exc)})
                settled = False
            if settled:
                unsettled = 0
                await trio.sleep(self.config.recheck_s)
            else:  # no answer yet, or no relay identified yet: soon, then less often
                unsettled += 1
                await trio.sleep(min(self.config.retry_s, 2.0**unsettled))

    async def check(self) -> Verdict:
        """Ask up to ``checkers`` peers to dial back; update and return the verdict."""
        ports = self.ports()
        answers: dict[str, DialBackResponse] = {}

        async def ask(peer: str) -> None:
            try:
                answers[peer] = await self._requests.request(
                    peer, DIALBACK, DialBackRequest(ports=ports)
                )
            except Exception as exc:  # no answer is no vote
                log.debug("dial-back not answered", extra={"peer": peer, "error": repr(exc)})

        async with trio.open_nursery() as nursery:
            for peer in self._checkers()[: self.config.checkers]:
                nursery.start_soon(ask, peer)
        if not answers:
            state = "unknown"
        else:
            reached = sum(1 for a in answers.values() if a.reached)
            state = "public" if reached * 2 > len(answers) else "unreachable"
        previous = self.verdict.state
        self.verdict = Verdict(
            state,
            tuple(sorted(answers)),
            tuple(sorted({a.observed for a in answers.values()})),
            time.time(),
        )
        if state != previous:
            log.info(
                "reachability",
                extra={"state": state, "checkers": len(answers), "seen_as": self.verdict.observed},
            )
        return self.verdict

    def _bootstrap_ids(self) -> list[str]:
        return [a.rsplit("/p2p/", 1)[-1] for a in self._bootstrap if "/p2p/" in a]

    def _ranked(self, peers: list[str]) -> list[str]:
        first = self._bootstrap_ids()
        return sorted(peers, key=lambda p: (p not in first, p))

    def _checkers(self) -> list[str]:
        peers = [
            p
            for p in self._host.connected_peers()
            if DIALBACK.id in self._host.protocols_of(p) and not self._host.is_relayed(p)
        ]
        return self._ranked(peers)

    async def _apply(self) -> bool:
        """Use relays when unreachable, drop them when public; False to retry soon."""
        state = self.verdict.state
        if state == "unknown":
            return False
        if self._hop:
            if state == "unreachable":
                log.warning("this relay is not reachable from outside: open its port")
            return True
        if state == "public":
            await self._relay.use_relays([])
            return True
        relays = self._relays()
        await self._relay.use_relays(relays)
        return bool(relays)

    def _relays(self) -> list[str]:
        """Connected relays as full addresses (bootstrap relays first)."""
        by_id = {a.rsplit("/p2p/", 1)[-1]: a for a in self._bootstrap if "/p2p/" in a}
        out = []
        for peer in self._ranked(self._host.connected_peers()):
            if HOP not in self._host.protocols_of(peer) or self._host.is_relayed(peer):
                continue
            addr = by_id.get(peer) or next(
                (
                    f"{a}/p2p/{peer}"
                    for a in self._host.peer_addrs(peer)
                    if "p2p-circuit" not in a and "/p2p/" not in a
                ),
                None,
            )
            if addr:
                out.append(addr)
        return out[: self.config.max_relays]
