"""The task service: runs agents for other peers, and runs agents on other peers.

Provider side (`_answer`): the release comes from this node's registry, the
build from its store (fetched from the peers that hold it if it is not here),
the run from its sandbox under the listing's limits capped by ``[runtime]``;
the answer carries the output and a signed `Receipt`.

User side (`run_task`): ask the given provider, or each connected provider in turn
until one answers with an output and a receipt that hold up (signature, task,
input, output, and the build the user's own registry names for that release).
A provider whose receipt does not hold up is penalised; one that fails or
refuses is passed over for the next.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from typing import Any

import trio

from crdt import Version, VersionError, VersionRange
from p2p import GossipMessage, Keypair, Overlay, P2PError, Refused, Verdict
from runtime import Limits, LimitsError, SandboxError, WorkerPool

from ._builds import BuildError
from ._buildservice import BuildService
from ._cards import TOPIC as CARDS_TOPIC
from ._cards import AgentCard, CardBook, CardRejected
from ._config import RuntimeSection, ServeSection
from ._registry import RegistryService
from ._tasks import (
    MAX_TASK_OUTPUT,
    TASK,
    BadReceipt,
    Receipt,
    TaskError,
    TaskRequest,
    TaskResponse,
    digest,
)

log = logging.getLogger("mercato.tasks")

FETCH_TIMEOUT_S = 60.0
ANNOUNCE_EVERY_S = 600.0
CHANGE_CHECK_S = 1.0  # how often to look whether what this node serves changed
PENALTY_BAD_RECEIPT = 50.0


class TaskService:
    def __init__(
        self,
        node_key: Keypair,
        overlay: Overlay,
        registry: RegistryService,
        builds: BuildService,
        runtime: WorkerPool,
        caps: RuntimeSection,
        serving: ServeSection,
    ) -> None:
        self._key = node_key
        self._overlay = overlay
        self._registry = registry
        self._builds = builds
        self._runtime = runtime
        self._caps = caps
        self._serving = serving
        self.cards = CardBook()
        self.served = 0
        self._beat = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer tasks, follow other providers' cards, and (when this node serves
        agents) publish its own card every heartbeat. Runs until cancelled."""
        self._overlay.requests.serve(TASK, self._answer)
        await self._overlay.gossip.subscribe(CARDS_TOPIC, self._on_card, self._validate_card)
        task_status.started()
        announced: dict[str, float] = {}
        last_offer: tuple[list[str], list[int]] = ([], [])
        last_time = -self._serving.heartbeat_s
        while True:
            # Publish every heartbeat, and at once when what it can serve changes (a
            # served agent's listing arrived, or its price changed).
            offer = await self._servable()
            due = trio.current_time() - last_time >= self._serving.heartbeat_s
            if offer[0] and (due or offer != last_offer or self._beat.is_set()):
                await self._heartbeat(offer, announced)
                last_offer, last_time = offer, trio.current_time()
            self._beat = trio.Event()
            with trio.move_on_after(min(self._serving.heartbeat_s, CHANGE_CHECK_S)):
                await self._beat.wait()

    async def _servable(self) -> tuple[list[str], list[int]]:
        """The served agents this node's registry knows, with their prices."""
        agents, prices = [], []
        for agent in self._serving.agents:
            publisher, _, name = agent.partition("/")
            shown = await self._registry.show(publisher, name)
            if shown is not None and not shown.get("deprecated") and shown["releases"]:
                agents.append(agent)
                prices.append(int(shown["price"]))
        return agents, prices

    async def _heartbeat(
        self, offer: tuple[list[str], list[int]], announced: dict[str, float]
    ) -> None:
        agents, prices = offer
        card = AgentCard(
            provider=self._overlay.peer_id,
            seq=time.time_ns(),
            expires=time.time() + self._serving.card_ttl_s,
            agents=agents,
            prices=prices,
            load=float(self._runtime.busy + self._runtime.waiting),
            addrs=self._overlay.host.listen_addrs()[:8],
        )
        self.cards.add(card)
        try:
            await self._overlay.gossip.publish(CARDS_TOPIC, card.sign(self._key))
        except P2PError as exc:
            log.debug("could not publish the agent card", extra={"why": str(exc)})
        for agent in agents:  # provider records, for peers that missed the cards
            if time.monotonic() - announced.get(agent, -ANNOUNCE_EVERY_S) >= ANNOUNCE_EVERY_S:
                announced[agent] = time.monotonic()
                with contextlib.suppress(P2PError):
                    await self._overlay.dht.provide(f"agent:{agent}")

    async def _validate_card(self, message: GossipMessage) -> Verdict:
        try:
            card = AgentCard.verify(message.data)
        except CardRejected:
            return Verdict.REJECT
        return (
            Verdict.ACCEPT
            if self.cards.add(card) or card.provider == self._overlay.peer_id
            else Verdict.IGNORE
        )

    async def _on_card(self, message: GossipMessage) -> None:
        pass  # taken in the validator

    def serve_agents(self, agents: tuple[str, ...]) -> None:
        """Change what this node serves (the next heartbeat tells the others)."""
        self._serving = dataclasses.replace(self._serving, agents=agents)
        self._beat.set()

    def candidates(self, agent: str) -> list[dict[str, Any]]:
        """Providers whose live card serves ``agent``, cheapest and least loaded first."""
        return self.cards.candidates(agent)

    # -- provider ----------------------------------------------------------------

    async def _release(self, agent: str, wanted: str) -> tuple[dict[str, Any], dict[str, Any]]:
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name) if publisher and name else None
        if shown is None or shown.get("deprecated"):
            raise Refused("unknown_agent", f"this node's registry has no agent {agent[:120]}")
        try:
            wanted_range = VersionRange.parse(wanted)
        except VersionError as exc:
            raise Refused("bad_request", str(exc)) from None
        for release in shown["releases"]:  # newest first
            if wanted_range.matches(Version.parse(release["version"])):
                return shown, release
        raise Refused("unknown_agent", f"no release of {agent} matches {wanted}")

    def _limits(self, listing: dict[str, Any], stdin: bytes) -> Limits:
        declared = listing.get("limits") or {}
        try:
            limits = Limits(
                fuel=declared.get("fuel", Limits.fuel),
                timeout_s=min(float(declared.get("timeout_s", 10)), self._caps.max_timeout_s),
                memory_mb=min(declared.get("memory_mb", 64), self._caps.max_memory_mb),
                max_input_bytes=declared.get("max_input_bytes", Limits.max_input_bytes),
                max_output_bytes=min(
                    declared.get("max_output_bytes", Limits.max_output_bytes), MAX_TASK_OUTPUT
                ),
            ).check()
        except LimitsError as exc:
            raise Refused("bad_listing", str(exc)) from None
        if len(stdin) > limits.max_input_bytes:
            raise Refused(
                "input_too_large", f"the input is over the listing's {limits.max_input_bytes} bytes"
            )
        return limits

    async def _build_path(self, cid: str) -> Any:
        info = await self._builds.info(cid)
        if info is None or not info.complete:
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    await self._builds.fetch(cid, await self._builds.copies(cid))
            except (BuildError, P2PError, trio.TooSlowError) as exc:
                raise Refused("unavailable", f"cannot get the build {cid}: {exc}") from None
        return self._builds.builds.path(cid)

    async def _answer(self, peer: str, request: TaskRequest) -> TaskResponse:
        if request.agent not in self._serving.agents:
            raise Refused("not_served", "this node does not serve that agent")
        listing, release = await self._release(request.agent, request.version)
        price = int(listing["price"])
        if price > 0:
            raise Refused(
                "payment_required", "paid tasks need payment channels; this node runs free ones"
            )
        limits = self._limits(listing, request.input)
        path = await self._build_path(release["cid"])
        try:
            result = await self._runtime.run(
                path, request.input, limits, key=release["cid"], name=listing["name"]
            )
        except SandboxError as exc:
            raise Refused("cannot_run", str(exc)) from None
        receipt = Receipt(
            task=request.task,
            agent=request.agent,
            version=release["version"],
            cid=release["cid"],
            input_hash=digest(request.input),
            output_hash=digest(result.output),
            outcome=result.outcome.value,
            fuel=result.usage.fuel or 0,
            wall_ms=int(result.usage.wall_ms),
            price=price,
            provider=self._overlay.peer_id,
            user=peer,
            time=int(time.time()),
        )
        self.served += 1
        signed = await trio.to_thread.run_sync(receipt.sign, self._key)
        return TaskResponse(output=result.output, receipt=signed)

    # -- user ----------------------------------------------------------------------

    def providers(self) -> list[str]:
        host = self._overlay.host
        return [p for p in host.connected_peers() if TASK.id in host.protocols_of(p)]

    async def _reachable(self, agent: str) -> list[str]:
        """Providers from live cards (dialled if need be), best first."""
        host, out = self._overlay.host, []
        for candidate in self.candidates(agent):
            peer = candidate["provider"]
            if peer == self._overlay.peer_id:
                continue
            if peer not in host.connected_peers():
                for addr in candidate["addrs"][:2]:
                    with contextlib.suppress(P2PError):
                        await host.connect(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
                        break
            out.append(peer)
        return out

    async def run_task(
        self, agent: str, version: str, stdin: bytes, provider: str | None = None
    ) -> dict[str, Any]:
        """Run ``agent`` on ``provider`` (or the first connected provider that can);
        TaskError if none could, saying why each failed."""
        candidates = [provider] if provider else await self._reachable(agent)
        if not candidates:
            raise TaskError(
                f"no provider of {agent} is known: none has sent an agent card (give --provider)"
            )
        errors = []
        for peer in candidates:
            task = secrets.token_bytes(16)
            request = TaskRequest(task=task, agent=agent, version=version, input=stdin)
            try:
                answer = await self._overlay.requests.request(peer, TASK, request)
                receipt = await trio.to_thread.run_sync(Receipt.verify, answer.receipt)
                receipt.check(task, peer, stdin, answer.output)
                await self._check_release(agent, receipt)
            except BadReceipt as exc:
                await self._overlay.host.penalize(peer, PENALTY_BAD_RECEIPT, str(exc))
                errors.append(f"{peer[:16]}…: {exc}")
                continue
            except P2PError as exc:
                errors.append(f"{peer[:16]}…: {exc}")
                continue
            return {"output": answer.output, "receipt": receipt, "provider": peer}
        raise TaskError(f"no provider ran {agent}: " + "; ".join(errors[:4]))

    async def _check_release(self, agent: str, receipt: Receipt) -> None:
        """The build the provider ran must be the one this node's registry binds to
        that release (when this node knows it)."""
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name)
        for release in (shown or {}).get("releases", []):
            if release["version"] == receipt.version and release["cid"] != receipt.cid:
                raise BadReceipt(f"the provider ran {receipt.cid}, not the release's build")
