"""The task service: runs agents for other peers, and follows who serves what.

Provider side (`_answer`): a quote names the release, price, expected latency
and load, signed; a run must carry this node's own unexpired quote for the
asking peer. The release comes from this node's registry, the build from its
store (fetched from the peers that hold it if it is not here), the run from its
sandbox under the listing's limits capped by ``[runtime]``; the answer carries
the output and a signed `Receipt`, and the task goes into the task log. An
``ack`` (a user's acknowledgement of receipts) is kept as its channel's latest
state when it pays what that state pays and commits to more receipts.

Cards: when this node serves agents it publishes its card every heartbeat (and
at once when what it serves changes); it keeps every other provider's live
card. The user's side lives in `TaskRunner`; `run_task` hands over to it.

Each task served is logged (INFO: agent, user, price, outcome, ms) and goes into
the event log as ``task.served``, with ``payment.received`` when it was paid;
the channels' events come from the settlement service, through the task log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from solders.pubkey import Pubkey

from mercato.crdt import SUBCALL_LIMITS, Version, VersionError, VersionRange
from mercato.p2p import Keypair, Overlay, P2PError, Refused
from mercato.runtime import (
    HostHandler,
    Limits,
    LimitsError,
    Outcome,
    RunResult,
    SandboxError,
    WorkerPool,
)
from mercato.settlement import Channel, PaymentShort, SettlementError

from .._config import RuntimeSection, ServeSection
from ..builds import BuildError, BuildService
from ..commerce import (
    CommerceError,
    Entitled,
    Entitlements,
    LicenceRequired,
    lowest_run_price,
    plans_text,
    run_price,
)
from ..money import SettlementService
from ..registry import RegistryService
from ._cards import AgentCard, CardExchange, provider_key
from ._choice import rank
from ._log import TaskLog, TaskRecord
from ._messages import (
    MAX_DEPTH,
    MAX_TASK_OUTPUT,
    TASK,
    BadReceipt,
    Quote,
    Receipt,
    TaskRequest,
    TaskResponse,
    digest,
)
from ._subcalls import Infer, SubCalls

if TYPE_CHECKING:
    from ._idempotency import RunKeys
    from ._runner import TaskRunner
    from ._spending import Budget, SpendLog

log = logging.getLogger("mercato.tasks")

FETCH_TIMEOUT_S = 60.0
ANNOUNCE_EVERY_S = 600.0
CHANGE_CHECK_S = 1.0  # how often to look whether what this node serves changed
QUOTE_TTL_S = 30.0
DEFAULT_EXPECTED_MS = 20.0  # a run's wall time before this node has run the build
FETCH_EXPECTED_MS = 1000.0  # added when the build must be fetched first


@dataclasses.dataclass(frozen=True)
class LocalOffer:
    """A served agent as this node runs it now (see `TaskService.offer_here`)."""

    agent: str
    listing: dict[str, Any]
    release: dict[str, Any]
    """The newest release: what a run now runs (its ``version`` and ``cid``)."""
    price: int
    """The listing's price of one run, in lamports."""
    timeout_s: float = Limits.timeout_s
    """The longest a run may take on this node (the listing's, capped by ``[runtime]``)."""


@dataclasses.dataclass(frozen=True)
class LocalRun:
    """A run this node served outside a channel (see `TaskService.run_here`)."""

    offer: LocalOffer
    result: RunResult
    receipt: Receipt
    signed: bytes
    """The receipt, signed by this node's key (`Receipt.verify` reads it)."""


def run_limits(listing: dict[str, Any], stdin: bytes, caps: RuntimeSection) -> Limits:
    """The limits a run of ``listing`` gets: what it declares, capped by ``[runtime]``.

    Refused (``bad_listing``, ``input_too_large``) if the listing's limits are
    unusable or the input is over them.
    """
    declared = listing.get("limits") or {}
    try:
        limits = Limits(
            fuel=declared.get("fuel", Limits.fuel),
            timeout_s=min(float(declared.get("timeout_s", 10)), caps.max_timeout_s),
            memory_mb=min(declared.get("memory_mb", 64), caps.max_memory_mb),
            max_input_bytes=declared.get("max_input_bytes", Limits.max_input_bytes),
            max_output_bytes=min(
                declared.get("max_output_bytes", Limits.max_output_bytes), MAX_TASK_OUTPUT
            ),
        ).check()
    except LimitsError as exc:
        raise Refused("bad_listing", str(exc)) from exc
    if len(stdin) > limits.max_input_bytes:
        raise Refused(
            "input_too_large",
            f"the input is {len(stdin)} bytes, over the listing's {limits.max_input_bytes}",
        )
    return limits


def _models_changed(now: list[dict[str, Any]], before: list[dict[str, Any]]) -> bool:
    """Whether the models offered changed in what a user chooses by (a new measure
    of speed alone waits for the next heartbeat)."""

    def key(offers: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(o["model"], o["input_price"], o["output_price"]) for o in offers]

    return key(now) != key(before)


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
        cards: CardExchange,
        tasklog: TaskLog,
        runner: TaskRunner,
        money: SettlementService,
        entitlements: Entitlements | None = None,
    ) -> None:
        """``entitlements`` checks licences for listings sold by plan; without it,
        this node serves none of them."""
        self._key = node_key
        self._entitlements = entitlements
        self._overlay = overlay
        self._registry = registry
        self._builds = builds
        self._runtime = runtime
        self._caps = caps
        self._serving = serving
        self.cards = cards.book
        self.exchange = cards
        self.tasklog = tasklog
        self.runner = runner
        self._money = money
        money.on_event = tasklog.note  # channels opened, closed, refunded: into the event log
        self._unlisted: set[str] = set()  # served refs not in the registry, warned of once
        self.served = 0
        self._beat = trio.Event()
        self._expected_ms: dict[str, float] = {}
        self.model_offers: Callable[[], list[dict[str, Any]]] = list
        """The models this node serves now, for its card (set by the model service)."""
        self.infer: Infer | None = None
        """Model calls for the agents this node runs (set by the models part)."""
        # What users owe for composite tasks' sub-calls: peer -> task -> lamports,
        # from the receipt until their ``pay`` (in memory: a restart forgets it).
        self._owed: dict[str, dict[bytes, int]] = {}
        self._fronting: dict[str, int] = {}  # peer -> sub-calls' most of its runs in flight

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer tasks, follow other providers' cards, and (when this node serves
        agents) publish its own card every heartbeat. Runs until cancelled; the
        task log is flushed on the way out."""
        await self.runner.load()
        async with trio.open_nursery() as nursery:
            await nursery.start(self.tasklog.run)
            await nursery.start(self.runner.send_acks)
            self._overlay.requests.serve(TASK, self._answer)
            task_status.started()
            await self._cards_loop()

    async def _cards_loop(self) -> None:
        announced: dict[str, float] = {}
        last_offer: tuple[list[str], list[int], list[dict[str, Any]]] = ([], [], [])
        last_time = -self._serving.heartbeat_s
        while True:
            # Publish every heartbeat, and at once when what it can serve changes (a
            # served agent's listing arrived, or its price changed; a model's engine
            # went down or came back).
            offer = (*await self._servable(), self.model_offers())
            due = trio.current_time() - last_time >= self._serving.heartbeat_s
            changed = offer[:2] != last_offer[:2] or _models_changed(offer[2], last_offer[2])
            if (offer[0] or offer[2] or last_offer[2]) and (due or changed or self._beat.is_set()):
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
            self._warn_unlisted(agent, shown)
            if shown is None or shown.get("deprecated") or shown.get("kind") != "agent":
                continue  # unknown, gone, or a model (not run here)
            if shown["releases"]:
                agents.append(agent)
                prices.append(lowest_run_price(shown))
        return agents, prices

    def _warn_unlisted(self, agent: str, shown: dict[str, Any] | None) -> None:
        """Warn once that a served agent is not in the registry (yet): a node asked to
        serve a listing before it arrived must not be silent about it."""
        if shown is not None:
            self._unlisted.discard(agent)  # warned again if it were ever gone
        elif agent not in self._unlisted:
            self._unlisted.add(agent)
            log.warning(
                "%s is not in the registry yet: it will be served once its listing and a "
                "release arrive",
                agent,
                extra={"agent": agent},
            )

    async def _heartbeat(
        self,
        offer: tuple[list[str], list[int], list[dict[str, Any]]],
        announced: dict[str, float],
    ) -> None:
        agents, prices, models = offer
        card = AgentCard(
            provider=self._overlay.peer_id,
            seq=time.time_ns(),
            expires=time.time() + self._serving.card_ttl_s,
            agents=agents,
            prices=prices,
            load=float(self._runtime.busy + self._runtime.waiting),
            addrs=self._overlay.host.listen_addrs()[:8],
            wallet=self._money.address if self._money else "",
            models=models,
        )
        self.cards.add(card)
        await self.exchange.publish(card, card.sign(self._key))
        # Provider records: how nodes that do not follow these refs yet find us.
        for ref in [*agents, *(str(m["model"]) for m in models)]:
            if time.monotonic() - announced.get(ref, -ANNOUNCE_EVERY_S) >= ANNOUNCE_EVERY_S:
                announced[ref] = time.monotonic()
                with contextlib.suppress(P2PError):
                    await self._overlay.dht.provide(provider_key(ref))

    @property
    def serving(self) -> tuple[str, ...]:
        """The agents this node runs for others, as PUBLISHER/NAME."""
        return self._serving.agents

    def beat(self) -> None:
        """Publish the card now (what this node serves changed)."""
        self._beat.set()

    def serve_agents(self, agents: tuple[str, ...]) -> None:
        """Change what this node serves (the next heartbeat tells the others)."""
        self._serving = dataclasses.replace(self._serving, agents=agents)
        self._beat.set()

    # -- provider ----------------------------------------------------------------

    async def _release(
        self, agent: str, wanted: str, licence: bytes = b"", peer: str = ""
    ) -> tuple[dict[str, Any], dict[str, Any], Entitled | None]:
        """The listing, its newest release in ``wanted`` (and covered by the licence
        shown, for a listing sold by plan), and that licence."""
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name) if publisher and name else None
        if shown is None or shown.get("deprecated"):
            raise Refused("unknown_agent", f"this node's registry has no agent {agent[:120]}")
        if shown.get("kind") != "agent":  # a model: served by an inference engine, not here
            raise Refused("not_served", f"{agent[:120]} is a model, not an agent: no build runs it")
        try:
            wanted_range = VersionRange.parse(wanted)
        except VersionError as exc:
            raise Refused("bad_request", str(exc)) from exc
        entitled = await self._entitled(shown, licence, peer)
        releases = [  # with a build: the only kind an agent's has, but a listing's kind may change
            r
            for r in shown["releases"]
            if r["cid"] and wanted_range.matches(Version.parse(r["version"]))
        ]
        if not releases:  # newest first
            raise Refused("unknown_agent", f"no release of {agent} matches {wanted}")
        if entitled is None:
            return shown, releases[0], None
        for release in releases:
            if entitled.covers(release["version"]):
                return shown, release, entitled
        raise Refused(
            "not_covered",
            f"the licence covers {entitled.licence.versions} of {agent}, and no release in "
            f"{wanted} is in it: " + plans_text(agent, shown.get("plans") or {}),
        )

    async def _entitled(
        self, listing: dict[str, Any], licence: bytes, peer: str
    ) -> Entitled | None:
        """The licence a task runs under (None for a listing without plans); Refused
        without one that holds on the ledger."""
        if not listing.get("plans"):
            return None
        if self._entitlements is None:
            raise Refused("licence_refused", "this node cannot check licences")
        try:
            return await self._entitlements.check(listing, licence, peer)
        except LicenceRequired as exc:
            raise Refused("licence_required", str(exc)) from exc
        except CommerceError as exc:
            raise Refused("licence_refused", str(exc)) from exc

    async def _build_path(self, cid: str) -> Any:
        info = await self._builds.info(cid)
        if info is None or not info.complete:
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    await self._builds.fetch(cid, await self._builds.copies(cid))
            except (BuildError, P2PError, trio.TooSlowError) as exc:
                raise Refused("unavailable", f"cannot get the build {cid}: {exc}") from exc
        return self._builds.builds.path(cid)

    async def _answer(self, peer: str, request: TaskRequest) -> TaskResponse:
        if request.op == "ack":  # about a channel, whatever this node serves now
            return await self._ack(peer, request)
        if request.op == "pay":
            return await self._take_pay(peer, request)
        if request.agent not in self._serving.agents:
            raise Refused("not_served", "this node does not serve that agent")
        if request.op == "quote":
            return await self._quote(peer, request)
        if request.op == "run":
            return await self._run(peer, request)
        raise Refused("bad_request", f"unknown op {request.op!r}: quote, run, ack or pay")

    async def _ack(self, peer: str, request: TaskRequest) -> TaskResponse:
        """A user's acknowledgement of a receipt: the channel's latest payouts signed
        again, committing to more receipts; stored as the channel's latest state."""
        if not request.payment:
            raise Refused("bad_ack", "an acknowledgement carries the channel's state")
        try:
            await self._money.accept_ack(peer, request.payment)
        except SettlementError as exc:
            raise Refused("bad_ack", str(exc)) from exc
        return TaskResponse()

    async def _quote(self, peer: str, request: TaskRequest) -> TaskResponse:
        listing, release, entitled = await self._release(
            request.agent, request.version, request.licence, peer
        )
        run_limits(listing, b"", self._caps)  # a listing this node cannot run: refuse now
        declared = (listing.get("limits") or {}).get("max_input_bytes", Limits.max_input_bytes)
        if request.input_size > declared:
            raise Refused(
                "input_too_large",
                f"the input is {request.input_size} bytes, over the listing's {declared}",
            )
        cid = release["cid"]
        expected = self._expected_ms.get(cid, DEFAULT_EXPECTED_MS)
        info = await self._builds.info(cid)
        if info is None or not info.complete:
            expected += FETCH_EXPECTED_MS
        queued = self._runtime.waiting / max(self._runtime.slots, 1)
        price = run_price(listing, entitled)
        # A composite agent's sub-calls may cost what the budget leaves past its price.
        subcalls_max = max(request.budget - price, 0) if release.get("dependencies") else 0
        quote = Quote(
            quote=secrets.token_bytes(16),
            agent=request.agent,
            version=release["version"],
            cid=cid,
            price=price,
            expected_ms=int(expected * (1 + queued)),
            load=float(self._runtime.busy + self._runtime.waiting),
            expires=time.time() + QUOTE_TTL_S,
            provider=self._overlay.peer_id,
            user=peer,
            payee=self._money.address if price + subcalls_max > 0 else "",
            creator=listing["publisher"],
            royalty_bps=int(listing["royalty_bps"]),
            licence=str(entitled.licence.mint) if entitled else "",
            subcalls_max=subcalls_max,
        )
        return TaskResponse(quote=quote.sign(self._key))

    def _accepted(self, peer: str, request: TaskRequest) -> Quote:
        """The quote the run carries, if it is this node's, for this peer, and still holds."""
        try:
            quote = Quote.verify(request.quote)
        except BadReceipt as exc:
            raise Refused("bad_quote", str(exc)) from exc
        if quote.provider != self._overlay.peer_id or quote.user != peer:
            raise Refused("bad_quote", "that quote is not from this node for you")
        if quote.agent != request.agent or quote.version != request.version:
            raise Refused("bad_quote", "that quote is for another agent or release")
        if quote.expires < time.time():
            raise Refused("quote_expired", "the quote has expired: ask for a new one")
        if quote.price > request.max_price:
            raise Refused("over_price", f"the quote asks {quote.price}, over your max_price")
        return quote

    async def _run(self, peer: str, request: TaskRequest) -> TaskResponse:
        quote = self._accepted(peer, request)
        listing, release, entitled = await self._release(
            request.agent, quote.version, request.licence, peer
        )
        mint = str(entitled.licence.mint) if entitled else ""
        if release["cid"] != quote.cid or mint != quote.licence:
            raise Refused(
                "quote_stale", "the release or licence changed since the quote: ask again"
            )
        if run_price(listing, entitled) != quote.price:
            raise Refused("quote_stale", "the release changed since the quote: ask again")
        if len(request.task) != 16:
            raise Refused("bad_request", "a task id is 16 bytes")
        limits = run_limits(listing, request.input, self._caps)
        paid = await self._paid(peer, request, quote, listing)
        # Held from here until the run ends: this peer's runs in flight never front
        # more for sub-calls than its channel has left.
        self._fronting[peer] = self._fronting.get(peer, 0) + quote.subcalls_max
        try:
            return await self._serve(peer, request, quote, (listing, release), limits, paid)
        except BaseException:
            if paid is not None:  # it did not run: the price stays the user's credit
                with trio.CancelScope(shield=True):
                    await self._money.unpay(*paid)
            raise
        finally:
            left = self._fronting.get(peer, 0) - quote.subcalls_max
            if left > 0:
                self._fronting[peer] = left
            else:
                self._fronting.pop(peer, None)

    async def _serve(
        self,
        peer: str,
        request: TaskRequest,
        quote: Quote,
        chosen: tuple[dict[str, Any], dict[str, Any]],
        limits: Limits,
        paid: tuple[Channel, dict[Pubkey, int]] | None,
    ) -> TaskResponse:
        listing, release = chosen
        channel = paid[0] if paid else None
        started = time.time()
        subcalls = self._subcalls(request, quote, listing, release, limits.timeout_s)
        result = await self._execute(
            quote.cid, listing, request.input, limits, subcalls.handle, _max_subcalls(listing)
        )
        subcalls.refused(result.refused)
        receipt = Receipt(
            task=request.task,
            agent=request.agent,
            version=quote.version,
            cid=quote.cid,
            input_hash=digest(request.input),
            output_hash=digest(result.output),
            outcome=result.outcome.value,
            fuel=result.usage.fuel or 0,
            wall_ms=int(result.usage.wall_ms),
            price=quote.price,
            provider=self._overlay.peer_id,
            user=peer,
            time=int(time.time()),
            quote=quote.quote,
            channel=str(channel.terms.stake) if channel else "",
            cumulative=sum(channel.settled.values()) if channel else 0,
            parent=request.parent,
            subcalls=subcalls.encoded(),
            subcalls_cost=subcalls.cost,
        )
        signed = await self._sign_and_log(receipt, started, paid)
        if receipt.subcalls_cost:
            self._owed.setdefault(peer, {})[request.task] = receipt.subcalls_cost
        return TaskResponse(output=result.output, receipt=signed)

    def _subcalls(
        self,
        request: TaskRequest,
        quote: Quote,
        listing: dict[str, Any],
        release: dict[str, Any],
        timeout_s: float,
    ) -> SubCalls:
        """The calls out of this run: within the quote's most, and the levels the
        listing allows below it (fewer if the calling task allows fewer)."""
        limits = listing.get("limits") or {}
        depth = min(int(limits.get("max_depth", SUBCALL_LIMITS["max_depth"])), MAX_DEPTH)
        if request.parent:
            depth = min(depth, request.depth)
        return SubCalls(
            self.runner, self._registry, self.infer, release, request.task,
            quote.subcalls_max, depth, timeout_s,
        )  # fmt: skip

    async def _execute(
        self,
        cid: str,
        listing: dict[str, Any],
        stdin: bytes,
        limits: Limits,
        host: HostHandler | None = None,
        max_calls: int = 0,
    ) -> RunResult:
        """Run the build ``cid`` (fetched first if it is not here) on ``stdin``;
        ``host`` answers its calls out, at most ``max_calls`` of them."""
        with self._builds.using(cid):
            path = await self._build_path(cid)
            try:
                result = await self._runtime.run(
                    path, stdin, limits, key=cid, name=listing["name"], host=host,
                    max_calls=max_calls,
                )  # fmt: skip
            except SandboxError as exc:
                raise Refused("cannot_run", str(exc)) from exc
        if result.outcome is Outcome.CRASHED:  # this node's fault, not the agent's
            raise Refused("crashed", "the sandbox worker died: try another provider")
        previous = self._expected_ms.get(cid, result.usage.wall_ms)
        self._expected_ms[cid] = 0.8 * previous + 0.2 * result.usage.wall_ms
        return result

    async def _sign_and_log(
        self,
        receipt: Receipt,
        started: float,
        paid: tuple[Channel, dict[Pubkey, int]] | None = None,
    ) -> bytes:
        """Sign the receipt of a run this node served and write it to the task log;
        log it, and note it (and its payment on ``paid``'s channel) in the event log."""
        self.served += 1
        signed = receipt.sign(self._key)
        self._tell_served(receipt, paid)
        await self.tasklog.write(
            TaskRecord(
                receipt.task.hex(), "provider", receipt.agent, receipt.version,
                self._overlay.peer_id, receipt.user, receipt.outcome, receipt.price, started,
                receipt.wall_ms, "", "", [], signed,
            )
        )  # fmt: skip
        return signed

    def _tell_served(
        self, receipt: Receipt, paid: tuple[Channel, dict[Pubkey, int]] | None
    ) -> None:
        """The log line and events of a task served (never its input or output)."""
        task = receipt.task.hex()
        log.info(
            "task served: %s@%s for %s, %s, %d lamports, %d ms",
            receipt.agent, receipt.version, receipt.user, receipt.outcome, receipt.price,
            receipt.wall_ms,
            extra={"task": task, "agent": receipt.agent, "user": receipt.user,
                   "price": receipt.price, "outcome": receipt.outcome, "ms": receipt.wall_ms},
        )  # fmt: skip
        self.tasklog.note(
            "task.served",
            {
                "id": task, "agent": receipt.agent, "version": receipt.version,
                "user": receipt.user, "price": receipt.price, "outcome": receipt.outcome,
                "ms": receipt.wall_ms, "channel": receipt.channel,
            },
        )  # fmt: skip
        if paid is not None:
            self._tell_paid(paid, receipt.user, task)

    def _tell_paid(self, paid: tuple[Channel, dict[Pubkey, int]], peer: str, task: str) -> None:
        """A payment this node took: ``amount`` in all, ``earned`` its own part (the
        rest, a creator's royalty, goes to the creator at the close)."""
        channel, amounts = paid
        me = self._money.wallet.pubkey()
        amount, earned = sum(amounts.values()), amounts.get(me, 0)
        stake = str(channel.terms.stake)
        log.info(
            "payment received: %d lamports on channel %s from %s", amount, stake, peer,
            extra={"channel": stake, "peer": peer, "lamports": amount, "task": task},
        )  # fmt: skip
        self.tasklog.note(
            "payment.received",
            {"channel": stake, "peer": peer, "amount": amount, "earned": earned, "task": task},
        )

    # -- provider, for a buyer outside the network (the x402 gateway) -------------

    async def offer_here(self, agent: str) -> LocalOffer:
        """What a run of ``agent`` on this node is now: its listing, the newest
        release, and the listing's price in lamports. Refused (``not_served``,
        ``unknown_agent``, ``licence_required``, ``bad_listing``) if this node would
        not run it for a buyer who brings no licence."""
        if agent not in self._serving.agents:
            raise Refused("not_served", "this node does not serve that agent")
        try:
            listing, release, _ = await self._release(agent, "*")
        except Refused as exc:
            if exc.code not in ("licence_required", "licence_refused"):
                raise
            raise Refused(
                "licence_required",
                f"{agent[:120]} is sold by plan (a licence or subscription), which a "
                "payment per call cannot carry: buy a plan with mercato and run it there",
            ) from exc
        limits = run_limits(listing, b"", self._caps)  # one this node cannot run: refuse now
        return LocalOffer(agent, listing, release, run_price(listing, None), limits.timeout_s)

    async def run_here(
        self, offer: LocalOffer, stdin: bytes, *, user: str, channel: str, cumulative: int
    ) -> LocalRun:
        """Run ``offer``'s release on this node for a buyer paying outside a channel,
        with the same limits, sandbox, receipt and task log as a peer's task. The
        receipt names ``user``, ``channel`` and ``cumulative`` as given (the x402
        gateway: the payer, the payment's transaction, the amount it pays); its
        price is the listing's, in lamports. Refused (``input_too_large``,
        ``unavailable``, ``cannot_run``, ``crashed``) when nothing ran."""
        limits = run_limits(offer.listing, stdin, self._caps)
        started = time.time()
        version, cid = offer.release["version"], offer.release["cid"]
        result = await self._execute(cid, offer.listing, stdin, limits)
        receipt = Receipt(
            task=secrets.token_bytes(16),
            agent=offer.agent,
            version=version,
            cid=cid,
            input_hash=digest(stdin),
            output_hash=digest(result.output),
            outcome=result.outcome.value,
            fuel=result.usage.fuel or 0,
            wall_ms=int(result.usage.wall_ms),
            price=offer.price,
            provider=self._overlay.peer_id,
            user=user,
            time=int(time.time()),
            channel=channel,
            cumulative=cumulative,
        )
        signed = await self._sign_and_log(receipt, started)
        return LocalRun(offer, result, receipt, signed)

    async def _paid(
        self, peer: str, request: TaskRequest, quote: Quote, listing: dict[str, Any]
    ) -> tuple[Channel, dict[Pubkey, int]] | None:
        """Nothing runs unpaid: a paid task's state is checked and stored, and the
        task counted against its channel's credit, first. A composite agent's
        channel must have room for its sub-calls' most too, beside what this
        peer's other runs may cost and owe; a peer that owes sub-calls is fronted
        no more until it pays them (``unpaid``)."""
        if quote.most == 0:
            return None
        if not request.payment:
            raise Refused("payment_required", f"this task may cost {quote.most} lamports")
        owed = sum(self._owed.get(peer, {}).values())
        if owed and quote.subcalls_max:
            raise Refused(
                "unpaid",
                f"you owe this node {owed} lamports for the sub-calls of earlier tasks: pay "
                "them (op pay) before it fronts more",
            )
        try:
            creator = Pubkey.from_string(quote.creator)
            paid = await self._money.accept_payment(
                peer, request.payment, quote.price, quote.royalty_bps, creator
            )
        except PaymentShort as exc:
            raise Refused("payment_short", str(exc)) from exc
        except SettlementError as exc:
            raise Refused("bad_payment", str(exc)) from exc
        room = paid[0].left - self._fronting.get(peer, 0) - owed
        if room < quote.subcalls_max:
            with trio.CancelScope(shield=True):
                await self._money.unpay(*paid)
            raise Refused(
                "channel_short",
                f"the channel has {room} lamports left beside your runs in flight; this "
                f"task's sub-calls may cost {quote.subcalls_max}",
            )
        return paid

    async def _take_pay(self, peer: str, request: TaskRequest) -> TaskResponse:
        """A user's payment of a composite task's sub-calls: exactly what its
        receipt charged them, on the channel the task was paid on."""
        debts = self._owed.get(peer, {})
        lamports = debts.pop(request.task, None)  # taken first: one pay settles it once
        if lamports is None:
            raise Refused("bad_pay", "this node is owed nothing for that task")
        try:
            me = self._money.wallet.pubkey()
            paid = await self._money.accept_payment(peer, request.payment, lamports, 0, me)
        except BaseException as exc:
            self._owed.setdefault(peer, {})[request.task] = lamports  # still owed
            if isinstance(exc, PaymentShort):
                raise Refused("payment_short", str(exc)) from exc
            if isinstance(exc, SettlementError):
                raise Refused("bad_payment", str(exc)) from exc
            raise
        if not self._owed.get(peer):
            self._owed.pop(peer, None)
        log.info("sub-calls paid", extra={"peer": peer, "lamports": lamports})
        self._tell_paid(paid, peer, request.task.hex())
        return TaskResponse()

    # -- user ----------------------------------------------------------------------

    async def run_task(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None = None,
        max_price: int | None = None,
        budget: Budget | None = None,
        most: int | None = None,
    ) -> dict[str, Any]:
        """Run ``agent`` on another peer (see `TaskRunner.run`); ``most``: what it may
        cost in all, a composite agent's sub-calls included."""
        return await self.runner.run(agent, version, stdin, provider, max_price, budget, most=most)

    async def best_quote(
        self,
        agent: str,
        version: str,
        input_size: int,
        provider: str | None = None,
        most: int | None = None,
    ) -> Quote:
        """The quote a run of ``agent`` would take now (see `TaskRunner.best_quote`)."""
        return await self.runner.best_quote(agent, version, input_size, provider, most)

    @property
    def spending(self) -> SpendLog:
        """What this node's tasks paid, and the budgets of runs in flight."""
        return self.runner.spending

    @property
    def run_keys(self) -> RunKeys:
        """Results of runs asked with an idempotency key."""
        return self.runner.run_keys

    async def find_providers(self, agent: str) -> list[dict[str, Any]]:
        """`providers`, after following ``agent`` and, if no card names it yet,
        looking its providers up (within the quote deadline)."""
        await self.exchange.find(agent, self.runner.lookup_s)
        return self.providers(agent)

    def providers(self, agent: str) -> list[dict[str, Any]]:
        """Live candidates for ``agent`` with this node's view of each: reputation
        and the score it would rank them by (before quotes), best first. Asking
        follows ``agent`` (see `find_providers`), so its cards come from now on."""
        self.exchange.follow(agent)
        runner = self.runner
        now = time.time()
        cards = [c for c in self.cards.candidates(agent) if c["provider"] != self._overlay.peer_id]
        scores = {
            o.provider: s
            for s, o in rank([runner._offer(c["provider"], c["price"], c["load"]) for c in cards])
        }
        out = [
            {
                **c,
                "score": round(scores[c["provider"]], 4),
                "reputation": runner.reputation.get(c["provider"], now).view(
                    now, runner.reputation.half_life_s
                ),
            }
            for c in cards
        ]
        return sorted(out, key=lambda c: (-c["score"], c["provider"]))


def _max_subcalls(listing: dict[str, Any]) -> int:
    limits = listing.get("limits") or {}
    return int(limits.get("max_subcalls", SUBCALL_LIMITS["max_subcalls"]))
