"""The user's side of tasks: choose a provider, run, check, retry, remember.

`TaskRunner.run` takes one task from the user's node to an answer it can trust:

1. This node's registry must know the listing (unless a provider is pinned);
   an input over the listing's limit or a price over the cap is refused before
   any peer is asked. A paid task carries a new channel state (`_settlement`),
   and its receipt must name that channel and the amount paid on it. A good
   receipt is kept in the channel book and acknowledged to the provider in the
   background (`send_acks`: the same payouts, committing to it), never delaying
   the answer.
2. Candidates come from live agent cards (and, when no card names the agent,
   from DHT provider records), without banned peers and those over the cap.
3. The best few by `_choice.rank` (price, reputation, latency, load) are asked
   for a signed quote at once; quotes later than ``quote_deadline_s`` are not
   waited for, unless none has come yet (then the first one ends the wait). A
   quote must name a release this node's registry binds to the same build. It
   is reused for QUOTE_REUSE_S, timed on this node's clock.
4. The best quote is run. The receipt must be the quoting provider's, for this
   task, user, agent, release, build, price, input and output. Anything else is
   a bad receipt: the provider is penalised and the next quote is tried. A
   provider that refuses, fails or times out is recorded and the next is tried,
   up to ``max_attempts`` providers; a remote refusal is never taken as final.
5. The first ``verify_first`` tasks of each provider, and ``verify_rate`` of the
   rest, get a second opinion: another provider, or this node's own sandbox.
   When they disagree this node runs the build itself, twice. A repeatable
   result with a deterministic outcome (ok, trap, out of fuel) decides: a
   provider that differs is ``wrong`` (and penalised) and is replaced, and the
   result is kept to judge the next answers to this task. Anything else
   (timeouts, a build this node cannot get, an agent that is not repeatable)
   blames nobody, and the answer of the better-reputed provider is returned
   as ``unverified``.
6. Every attempt counts in the provider's reputation; the task, its failed
   attempts and the reputation they changed are committed together.

Cancellation: a cancelled run is recorded as failed (shielded), with the
reputation changes of the attempts that finished.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import trio
from solders.pubkey import Pubkey

from mercato.crdt import Version, VersionError, VersionRange
from mercato.p2p import Overlay, P2PError, Refused, RemoteError, RequestTimeout
from mercato.runtime import SandboxError, WorkerPool
from mercato.settlement import Channel, ChannelError, SettlementError

from .._config import RuntimeSection, TasksSection
from .._store import Store
from ..builds import BuildError, BuildService
from ..commerce import (
    LicenceBook,
    LicenceRequired,
    LicenceRow,
    LicenceUse,
    lowest_run_price,
    plans_text,
)
from ..money import SettlementService, task_amounts
from ..registry import RegistryService
from ._cards import CardExchange
from ._choice import Offer, rank
from ._idempotency import RunKeys
from ._log import TaskLog, TaskRecord
from ._messages import (
    TASK,
    BadReceipt,
    NoProvider,
    Quote,
    Receipt,
    SubCall,
    TaskRefused,
    TaskRequest,
    UnknownAgent,
    digest,
)
from ._reputation import ReputationBook
from ._service import run_limits
from ._spending import Budget, SpendLog
from ._subcalls import ReceiptReader, check_subcalls, read_task_receipt

log = logging.getLogger("mercato.tasks")

QUOTE_REUSE_S = 20.0  # a quote holds 30 s on the provider's clock; reuse it less
QUOTE_TIMEOUT_S = 10.0  # past the deadline, how long the first quote may take
PENALTY_BAD_RECEIPT = 50.0
PENALTY_WRONG = 60.0  # two wrong outputs and this node bans the provider
FETCH_TIMEOUT_S = 60.0
SECOND_OPINION_QUOTES_S = 2.0  # to find a second provider before checking here instead
DETERMINISTIC = frozenset(("ok", "trap", "out_of_fuel"))  # same on every honest node
# Refusals that blame nobody (a payment refused is most likely this node's doing:
# another ledger, an empty wallet).
NO_FAULT = frozenset(
    ("payment_required", "bad_payment", "busy", "quote_expired", "quote_stale", "unpaid")
) | {"licence_required", "licence_refused", "not_covered"}  # the user's licence, not a fault
FORFEIT_COOLDOWN_S = 3600.0  # a provider that kept two payments lately is not paid again
REQUOTE = frozenset(("quote_expired", "quote_stale"))
MAX_QUOTED_PRICE = 10**15
ACK_QUEUE = 256  # acknowledgements waiting to be sent; past it, the next payment carries them
ACK_CONCURRENCY = 4  # sent at once (each in order with the states to its provider)
ACK_TIMEOUT_S = 10.0


class _Unusable(Exception):
    """A quote that is honest but of no use to this task (over the cap, a release
    this node has not heard of): skip the provider, blame nobody."""


@dataclass(frozen=True)
class _Offered:
    """A verified quote with the signed bytes that go back with the run."""

    quote: Quote
    signed: bytes
    rtt_ms: float
    received: float  # trio.current_time() when it arrived


@dataclass
class _Answer:
    provider: str
    quote: Quote
    output: bytes
    receipt: Receipt
    signed: bytes
    rtt_ms: float
    subcalls: list[SubCall] = field(default_factory=list)

    @property
    def result(self) -> tuple[str, bytes]:
        return self.receipt.outcome, self.receipt.output_hash


@dataclass
class _Task:
    """One task on its way: what was asked, and what happened so far."""

    agent: str
    version: str
    stdin: bytes
    pinned: str | None
    cap: int
    listing: dict[str, Any] | None
    tried: set[str] = field(default_factory=set)
    failures: list[dict[str, str]] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # providers whose standing changed
    requoted: set[str] = field(default_factory=set)
    truth: tuple[str, bytes] | None = None  # settled by this node's own runs
    runs: int = 0  # providers asked to run it (not those that only failed to quote)
    budget: Budget = field(default_factory=lambda: Budget(None))  # shared with second opinions
    licence: LicenceRow | None = None  # the licence it runs under (a listing sold by plan)
    size: int | None = None  # the input's size, when only quoting (no input)
    most: int | None = None  # the most it may cost in all, sub-calls included
    parent: bytes = b""  # the task whose agent calls it (a sub-call)
    depth: int = 0  # the levels of sub-calls allowed below it (a sub-call's)
    verify: bool = True  # second opinions, as the policy says
    over_cap: set[str] = field(default_factory=set)  # providers that asked too much
    bad: set[str] = field(default_factory=set)  # providers whose receipts did not hold

    @property
    def budget_asked(self) -> int:
        """What the quotes are asked under: the most in all (0: the price alone, and
        nothing for a listing whose releases call nothing, so that older
        providers, which know no budget, still take the task)."""
        releases = (self.listing or {}).get("releases") or []
        if self.listing is not None and not any(r.get("dependencies") for r in releases):
            return 0
        return self.most or 0

    @property
    def input_size(self) -> int:
        return len(self.stdin) if self.size is None else self.size

    def fail(self, provider: str, error: str) -> None:
        self.tried.add(provider)
        self.failures.append({"provider": provider, "error": error[:300]})


class TaskRunner:
    def __init__(
        self,
        overlay: Overlay,
        registry: RegistryService,
        builds: BuildService,
        runtime: WorkerPool,
        store: Store,
        cards: CardExchange,
        tasklog: TaskLog,
        caps: RuntimeSection,
        config: TasksSection,
        money: SettlementService,
        licences: LicenceBook | None = None,
    ) -> None:
        """``licences`` are this node's, for listings sold by plan."""
        self._overlay = overlay
        self._licences = licences
        self._uses: dict[tuple[str, str], bytes] = {}  # (mint, provider) -> signed LicenceUse
        self._registry = registry
        self._builds = builds
        self._runtime = runtime
        self._store = store
        self._cards = cards.book
        self._exchange = cards
        self._log = tasklog
        self._caps = caps
        self._config = config
        self._money = money
        self.reputation = ReputationBook(config.reputation_half_life_h * 3600)
        self.spending = SpendLog(store)
        self.run_keys = RunKeys(store)
        self._quotes: dict[tuple[str, str, str, int], _Offered] = {}
        self._inflight: dict[str, int] = {}
        # provider -> (when it last kept a payment, how many times lately)
        self._forfeits: dict[str, tuple[float, int]] = {}
        # (provider, channel, agent, task) of good receipts, for `send_acks`
        self._acks, self._acks_out = trio.open_memory_channel[tuple[str, str, str, bytes]](
            ACK_QUEUE
        )
        self.readers: dict[str, ReceiptReader] = {"call": read_task_receipt}
        """How to check the receipt of each kind of sub-call (the models part adds ``infer``)."""

    async def load(self) -> None:
        await self._store.run(self.reputation.load, self._store.db)

    # -- the journey -------------------------------------------------------------

    async def run(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None = None,
        max_price: int | None = None,
        budget: Budget | None = None,
        *,
        most: int | None = None,
        parent: bytes = b"",
        depth: int = 0,
        verify: bool = True,
    ) -> dict[str, Any]:
        """Run ``agent`` and return ``{task, output, receipt, signed, provider,
        verified, attempts, subcalls}``; ``budget`` bounds what it pays in all
        (second opinions too). ``most``: what the task may cost in all, a composite
        agent's sub-calls included (their part is paid once their receipts check
        out); ``parent`` and ``depth``: a sub-call's calling task and the levels
        allowed below it; ``verify``: whether second opinions may be asked.
        Raises UnknownAgent, TaskRefused or NoProvider."""
        cap_asked = max_price if max_price is not None else most
        listing = await self._listing(agent, version, stdin, cap_asked, pinned=provider)
        licence, version, upgrade = await self.licence_for(agent, version, listing)
        # Without a cap, pay no more than the creator lists (nothing, for an unknown listing).
        cap = cap_asked if cap_asked is not None else self._listed_price(listing, licence)
        task = _Task(agent, version, stdin, provider, cap, listing, budget=budget or Budget(None))
        task.licence = licence
        task.most, task.parent, task.depth, task.verify = most, parent, depth, verify
        first_id = secrets.token_bytes(16)
        started = time.time()
        answer: _Answer | None = None
        verified, error = "", "interrupted"
        try:
            answer, verified = await self._first_good(task, first_id)
            error = ""
        except NoProvider as exc:
            error = str(exc)
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self._record(task, first_id, started, answer, verified, error)
        receipt = answer.receipt
        return {
            "task": receipt.task.hex(),  # the one the receipt names (a second opinion's)
            "output": answer.output,
            "receipt": receipt,
            "signed": answer.signed,
            "subcalls": answer.subcalls,
            "provider": answer.provider,
            "verified": verified,
            "attempts": task.failures,
            "licence": licence.mint if licence else "",
            "upgrade": upgrade,
        }

    @staticmethod
    def _listed_price(listing: dict[str, Any] | None, licence: LicenceRow | None) -> int:
        if listing is None:
            return 0
        plan = (listing.get("plans") or {}).get(licence.plan) if licence else None
        return int(plan["run_price"]) if plan else lowest_run_price(listing)

    async def licence_for(
        self, agent: str, version: str, listing: dict[str, Any] | None
    ) -> tuple[LicenceRow | None, str, dict[str, Any] | None]:
        """For a listing sold by plan: the licence to run under, the newest release
        in ``version`` it covers, and the upgrade on offer when a newer release in
        range needs another plan. LicenceRequired if no licence covers any."""
        plans = (listing or {}).get("plans") or {}
        if listing is None or not plans:
            return None, version, None
        wanted = VersionRange.parse(version)
        releases = [
            r["version"] for r in listing["releases"] if wanted.matches(Version.parse(r["version"]))
        ]
        if not releases:  # nothing in range: the caller says so in its own words
            return None, version, None
        held = await self._licences.usable(agent) if self._licences is not None else []
        for i, release in enumerate(releases):  # newest first
            v = Version.parse(release)
            for row in held:
                if VersionRange.parse(row.versions).matches(v):
                    return row, release, (self._upgrade(plans, releases[0]) if i else None)
        covering = {
            n: p
            for n, p in plans.items()
            if VersionRange.parse(p["versions"]).matches(Version.parse(releases[0]))
        }
        raise LicenceRequired(
            f"{agent} runs only under a licence or subscription, and this node holds none "
            f"that covers {releases[0]}; " + plans_text(agent, covering or plans)
        )

    @staticmethod
    def _upgrade(plans: dict[str, Any], newest: str) -> dict[str, Any]:
        v = Version.parse(newest)
        return {
            "version": newest,
            "plans": [
                {"name": n, "kind": p["kind"], "price": p["price"], "versions": p["versions"]}
                for n, p in sorted(plans.items())
                if VersionRange.parse(p["versions"]).matches(v)
            ],
        }

    def _use(self, task: _Task, provider: str) -> bytes:
        """The signed word that ``provider`` may run ``task`` under its licence."""
        if task.licence is None:
            return b""
        key = (task.licence.mint, provider)
        if key not in self._uses:
            wallet = self._money.wallet
            use = LicenceUse(
                task.licence.mint, str(wallet.pubkey()), provider, self._overlay.peer_id
            )
            self._uses[key] = use.sign(wallet)
        return self._uses[key]

    async def _record(
        self,
        task: _Task,
        first_id: bytes,
        started: float,
        answer: _Answer | None,
        verified: str,
        error: str,
    ) -> None:
        """Commit the task and the standings it changed; a failed write is logged, and
        the user still gets the answer."""
        me = self._overlay.peer_id
        if answer is None:
            record = TaskRecord(
                first_id.hex(), "user", task.agent, task.version, task.pinned or "", me,
                "failed", 0, started, 0, "", error, task.failures,
            )  # fmt: skip
        else:
            r = answer.receipt
            record = TaskRecord(
                r.task.hex(), "user", task.agent, answer.quote.version, answer.provider, me,
                r.outcome, r.cost, started, r.wall_ms, verified, "", task.failures,
                answer.signed,
            )  # fmt: skip
        standings = [self.reputation.current(p) for p in task.changed]
        self._log.note(
            "task.run",
            {
                "id": record.id, "agent": record.agent, "version": record.version,
                "provider": record.provider, "price": record.price, "outcome": record.status,
            },
        )  # fmt: skip
        try:
            await self._log.write(record, standings)
        except Exception as exc:
            log.warning("could not record the task: %s", exc, extra={"task": record.id})

    async def _listing(
        self, agent: str, version: str, stdin: bytes, cap: int | None, pinned: str | None
    ) -> dict[str, Any] | None:
        """This node's view of the listing; refuse what no provider could run."""
        publisher, _, name = agent.partition("/")
        try:
            wanted = VersionRange.parse(version)
        except VersionError as exc:
            raise TaskRefused(str(exc)) from exc
        listing = await self._registry.show(publisher, name)
        if listing is None or listing.get("deprecated"):
            if pinned is None:
                raise UnknownAgent(
                    f"this node's registry has no agent {agent}: check the name with "
                    "`mercato search`, or give --provider"
                )
            return None
        if not any(wanted.matches(Version.parse(r["version"])) for r in listing["releases"]):
            if pinned is None:
                raise UnknownAgent(f"{agent} has no release in {version}")
            return None  # this node has not heard of it yet: the pinned provider may have
        try:
            run_limits(listing, stdin, self._caps)
        except Refused as exc:
            raise TaskRefused(exc.message) from exc
        price = lowest_run_price(listing)
        if cap is not None and price > cap:
            raise TaskRefused(f"{agent} costs {price} lamports a task, over --max-price {cap}")
        return listing

    async def _first_good(self, task: _Task, task_id: bytes) -> tuple[_Answer, str]:
        """Quote rounds, each over every untried candidate (see `_gather`), and a run
        on the best quote, until a run comes back good, ``max_attempts`` providers
        have run it, or ``timeout_s`` has passed without one."""
        deadline = trio.current_time() + self._config.timeout_s
        while task.runs < self._config.max_attempts and trio.current_time() < deadline:
            quotes = await self._quotes_for(task)
            if not quotes:
                break
            answer = await self._attempt(quotes[0], task_id, task)
            if answer is None:
                continue
            verified = await self._verify(answer, task)
            if verified is not None:
                return verified
        raise self._none_ran(task)

    def _none_ran(self, task: _Task, did: str = "ran") -> NoProvider:
        if not task.failures:
            prices = [c["price"] for c in self._cards.candidates(task.agent)]
            if prices and min(prices) > task.cap:
                return NoProvider(
                    f"every provider of {task.agent} asks more than {task.cap} lamports (the "
                    f"cheapest, {min(prices)}): raise --max-price"
                )
            return NoProvider(f"no provider of {task.agent} is known: none has sent an agent card")
        said = "; ".join(f"{f['provider']}: {f['error']}" for f in task.failures[:4])
        failed = {f["provider"] for f in task.failures}
        return NoProvider(
            f"no provider {did} {task.agent}: {said}",
            over_budget=failed <= task.over_cap,
            bad_receipts=failed <= task.bad,
        )

    async def best_quote(
        self,
        agent: str,
        version: str,
        input_size: int,
        provider: str | None = None,
        most: int | None = None,
    ) -> Quote:
        """The quote a run would take now (the best, asked as a run asks), for a
        caller to show before it runs; ``most`` as for `run`. The quote is kept for
        QUOTE_REUSE_S, so a run right after uses it. Raises UnknownAgent,
        TaskRefused or NoProvider."""
        listing = await self._listing(agent, version, b"", most, pinned=provider)
        licence, version, _ = await self.licence_for(agent, version, listing)
        # A pinned provider of a listing unknown here: show its price, whatever it is.
        cap = self._listed_price(listing, licence) if listing is not None else MAX_QUOTED_PRICE
        if most is not None:
            cap = most
        task = _Task(agent, version, b"", provider, cap, listing, size=input_size, most=most)
        task.licence = licence
        # A quote that lies counts against its provider here, in memory; it is
        # stored with the next task that changes that provider's standing.
        quotes = await self._quotes_for(task)
        if not quotes:
            raise self._none_ran(task, "quoted")
        return quotes[0].quote

    # -- candidates and quotes ---------------------------------------------------

    @property
    def lookup_s(self) -> float:
        """How long a first look-up of an agent's providers may take."""
        return self._config.quote_deadline_s * 2

    async def _candidates(self, agent: str, cap: int) -> list[dict[str, Any]]:
        """Providers whose live card serves ``agent`` within ``cap``; the first time,
        after following it (its cards fetched from the providers the DHT knows)."""
        await self._exchange.find(agent, self.lookup_s)
        host = self._overlay.host
        return [
            c
            for c in self._cards.candidates(agent)
            if c["provider"] != self._overlay.peer_id
            and not host.is_banned(c["provider"])
            and c["price"] <= cap
        ]

    def _offer(
        self, provider: str, price: int, load: float, quoted_ms: float | None = None
    ) -> Offer:
        """What the choice knows of a provider: measured latency (round trips of
        its runs) when there is some, else what its quote said plus the quote's
        own round trip."""
        standing = self.reputation.get(provider)
        latency = standing.latency_ms if standing.latency_ms is not None else quoted_ms
        return Offer(
            provider,
            price,
            standing.score,
            latency,
            load + self._inflight.get(provider, 0),
            proven=standing.ok > 0,
        )

    async def _quotes_for(self, task: _Task, reachable_only: bool = False) -> list[_Offered]:
        """Valid quotes from untried candidates, best first (empty when none is left).

        Candidates this node is connected to now are asked first: a card costs
        nothing to make up, and its addresses may lead nowhere; a connection
        proves at least that someone is there. ``reachable_only`` asks no one else.
        """
        names: list[tuple[str, list[str]]]
        first = 1
        if task.pinned is not None:
            names = [] if task.pinned in task.tried else [(task.pinned, [])]
        else:
            candidates = [
                c
                for c in await self._candidates(task.agent, task.cap)
                if c["provider"] not in task.tried
            ]
            ranked = rank([self._offer(c["provider"], c["price"], c["load"]) for c in candidates])
            addrs = {c["provider"]: c["addrs"] for c in candidates}
            connected = set(self._overlay.host.connected_peers())
            near = [(o.provider, addrs[o.provider]) for _, o in ranked if o.provider in connected]
            far = [
                (o.provider, addrs[o.provider]) for _, o in ranked if o.provider not in connected
            ]
            names = near if reachable_only else near + far
            first = min(len(near), self._config.quote_fanout) or self._config.quote_fanout
        quotes: list[_Offered] = []
        if names:
            await self._gather(names, task, quotes, first)
        offers = {o.quote.provider: o for o in quotes}
        ranked = rank(
            [
                self._offer(o.quote.provider, o.quote.price, o.quote.load,
                            o.rtt_ms + o.quote.expected_ms)
                for o in quotes
            ]
        )  # fmt: skip
        return [offers[o.provider] for _, o in ranked]

    async def _gather(
        self, names: list[tuple[str, list[str]]], task: _Task, quotes: list[_Offered], first: int
    ) -> None:
        """Ask the first ``first`` of ``names`` for quotes at once. Each time
        ``quote_deadline_s`` passes with no quote, or everyone asked has answered
        without one, ask twice as many more: candidates that cannot be reached
        (dead, or cards made up to take the first places) cost a task seconds, not
        their number of rounds. Stop at a deadline once a quote came, or when
        everyone has answered."""
        pending = list(names)
        batch = max(first, 1)
        asking = 0
        # Set when everyone asked so far has answered / when a first quote came (or
        # everyone answered); new ones each round, read by every ask when it ends.
        events = {"all": trio.Event(), "first": trio.Event()}

        async def ask(provider: str, addrs: list[str]) -> None:
            nonlocal asking
            try:
                await self._quote(provider, addrs, task, quotes)
            finally:
                asking -= 1
                if not asking:
                    events["all"].set()
                if quotes or not asking:
                    events["first"].set()

        async with trio.open_nursery() as nursery:
            while True:
                events = {"all": trio.Event(), "first": trio.Event()}
                for provider, addrs in pending[:batch]:
                    asking += 1
                    nursery.start_soon(ask, provider, addrs)
                pending, batch = pending[batch:], max(batch * 2, self._config.quote_fanout)
                with trio.move_on_after(self._config.quote_deadline_s):
                    await events["all"].wait()
                if quotes:
                    break  # at the deadline, or when all answered: choose among them
                if not pending:
                    if asking:
                        await events["first"].wait()  # a slow network still gets its first
                    break
                # nobody quoted yet and candidates are left: ask more of them
            nursery.cancel_scope.cancel()

    async def _quote(
        self, provider: str, addrs: list[str], task: _Task, out: list[_Offered]
    ) -> None:
        key = _quote_key(provider, task)
        cached = self._quotes.get(key)
        if cached is not None and trio.current_time() - cached.received < QUOTE_REUSE_S:
            if cached.quote.price <= task.cap:
                out.append(cached)
            else:
                task.over_cap.add(provider)
            return
        self._quotes.pop(key, None)
        with trio.move_on_after(QUOTE_TIMEOUT_S) as scope:
            try:
                await self._reach(provider, addrs)
                request = TaskRequest(op="quote", agent=task.agent, version=task.version,
                                      input_size=task.input_size,
                                      licence=self._use(task, provider),
                                      budget=task.budget_asked, depth=task.depth,
                                      parent=task.parent)  # fmt: skip
                asked = trio.current_time()
                response = await self._overlay.requests.request(provider, TASK, request)
                rtt_ms = (trio.current_time() - asked) * 1000
                quote = Quote.verify(response.quote)
                await self._check_quote(quote, provider, task)
            except BadReceipt as exc:
                await self._judge(provider, "bad_receipt", str(exc), task)
                return
            except _Unusable as exc:
                task.fail(provider, str(exc))
                return
            except RemoteError as exc:
                await self._refused(provider, exc, task)
                return
            except P2PError as exc:
                await self._judge(provider, "failed", str(exc), task)
                return
        if scope.cancelled_caught:
            await self._judge(provider, "failed", f"no quote in {QUOTE_TIMEOUT_S:g} s", task)
            return
        offered = _Offered(quote, response.quote, rtt_ms, trio.current_time())
        if len(self._quotes) > 4096:
            self._quotes.clear()
        self._quotes[key] = offered
        if quote.price > task.cap:  # an honest price, just over the cap
            task.fail(provider, f"asks {quote.price} lamports, over the cap of {task.cap}")
            task.over_cap.add(provider)
            return
        out.append(offered)

    async def _check_quote(self, quote: Quote, provider: str, task: _Task) -> None:
        """BadReceipt for a quote that lies; _Unusable for one of no use here."""
        if quote.provider != provider or quote.user != self._overlay.peer_id:
            raise BadReceipt("the quote is another provider's or for another user")
        if quote.agent != task.agent:
            raise BadReceipt("the quote is for another agent")
        if quote.subcalls_max > max(task.budget_asked - quote.price, 0):
            raise BadReceipt("the quote lets its sub-calls cost more than the budget asked")
        try:
            if not VersionRange.parse(task.version).matches(Version.parse(quote.version)):
                raise BadReceipt(f"the quote offers {quote.version}, outside {task.version}")
        except VersionError as exc:
            raise BadReceipt("the quote's version is not semver") from exc
        # The build must be the one this node's registry binds to that release.
        publisher, _, name = task.agent.partition("/")
        shown = await self._registry.show(publisher, name)
        for release in (shown or {}).get("releases", []):
            if release["version"] == quote.version:
                if release["cid"] != quote.cid:
                    raise BadReceipt(f"the provider offers {quote.cid}, not the release's build")
                return
        if task.pinned is None:  # unknown here: not a lie, but nothing to check it against
            raise _Unusable(f"it offers {quote.version}, which this node's registry lacks")

    async def _reach(self, provider: str, addrs: list[str]) -> None:
        host = self._overlay.host
        if provider in host.connected_peers():
            return
        for addr in addrs[:3]:
            with contextlib.suppress(P2PError):
                await host.connect(addr if "/p2p/" in addr else f"{addr}/p2p/{provider}")
                return

    async def _refused(self, provider: str, exc: RemoteError, task: _Task) -> None:
        if exc.code in NO_FAULT:  # str(exc) is "code: message", the code said once
            task.fail(provider, str(exc))
        else:
            await self._judge(provider, "refused", str(exc), task)

    # -- running -------------------------------------------------------------------

    async def _attempt(self, offered: _Offered, task_id: bytes, task: _Task) -> _Answer | None:
        """Run the task under a quote; None (and the failure counted) if it did not
        come back good. A paid one holds the provider's paying lock throughout, so
        its states reach the provider in order and a price that bought nothing is
        known as credit before the next task pays."""
        if offered.quote.most == 0:
            return await self._run_once(offered, task_id, task)
        provider = offered.quote.provider
        when, count = self._forfeits.get(provider, (0.0, 0))
        if count >= 2 and time.monotonic() - when < FORFEIT_COOLDOWN_S:
            task.fail(provider, "it kept payments without serving: not paying it for now")
            return None
        if not task.budget.allows(offered.quote.most):
            task.fail(
                provider,
                f"it may cost {offered.quote.most} lamports; this run may pay "
                f"{task.budget.left} more today ([spending] max_per_day)",
            )
            return None
        async with self._money.paying(provider):
            if trio.current_time() - offered.received > QUOTE_REUSE_S:  # aged in the queue
                self._quotes.pop(_quote_key(provider, task), None)
                task.requoted.discard(provider)
                return None
            return await self._run_once(offered, task_id, task)

    async def _run_once(self, offered: _Offered, task_id: bytes, task: _Task) -> _Answer | None:
        quote = offered.quote
        provider = quote.provider
        task.runs += 1
        try:
            payment, channel, amounts, relied = await self._payment(quote, task)
        except SettlementError as exc:  # this node cannot pay: not the provider's fault
            task.fail(provider, f"cannot pay it: {exc}")
            return None
        request = TaskRequest(
            op="run", agent=quote.agent, version=quote.version, input_size=len(task.stdin),
            task=task_id, quote=offered.signed, input=task.stdin, max_price=task.cap,
            payment=payment, licence=self._use(task, provider), budget=task.budget_asked,
            depth=task.depth, parent=task.parent,
        )  # fmt: skip
        self._inflight[provider] = self._inflight.get(provider, 0) + 1
        started = time.perf_counter()
        try:
            response = await self._overlay.requests.request(
                provider, TASK, request, timeout_s=self._config.timeout_s
            )
            receipt = Receipt.verify(response.receipt)
            receipt.check(task_id, quote, task.stdin, response.output, task.parent)
            stake = str(channel.terms.stake) if channel else ""
            paid = channel.paid if channel else 0
            if receipt.channel != stake or not 0 <= receipt.cumulative <= paid:
                raise BadReceipt("the receipt names another channel or amount than was paid")
            declared = self._declared(task, quote)
            prices = await self._run_prices(declared) if receipt.subcalls else {}
            subcalls = check_subcalls(receipt, declared, self.readers, prices)
        except BadReceipt as exc:
            task.bad.add(provider)
            await self._judge(provider, "bad_receipt", str(exc), task)
            return None
        except RemoteError as exc:
            self._quotes.pop(_quote_key(provider, task), None)
            if exc.code == "payment_short" and channel is not None:
                # The provider used a price this node counted as credit: it ran a task
                # whose answer never came back, or it kept a payment and refused. The
                # credit is spent; pay anew once, and count it against the provider.
                await self._money.settle(channel, relied)
                await self._spent(sum(relied.values()), provider, task_id, task)
                self._sent(channel, provider, sum(relied.values()), task_id)
                when, count = self._forfeits.get(provider, (0.0, 0))
                recent = time.monotonic() - when < FORFEIT_COOLDOWN_S
                self._forfeits[provider] = (time.monotonic(), count + 1 if recent else 1)
                await self._judge(provider, "failed", "it had used a payment", task)
                task.tried.discard(provider)
            if exc.code in REQUOTE | {"payment_short"} and provider not in task.requoted:
                task.requoted.add(provider)  # ask it again for a fresh quote, once
                return None
            await self._refused(provider, exc, task)
            return None
        except P2PError as exc:
            self._quotes.pop(_quote_key(provider, task), None)
            why = "timed out" if isinstance(exc, RequestTimeout) else str(exc)
            await self._judge(provider, "failed", why, task)
            return None
        finally:
            self._inflight[provider] -= 1
            if not self._inflight[provider]:
                del self._inflight[provider]
        if receipt.outcome == "crashed":  # the provider's sandbox failed, not the agent
            await self._judge(provider, "failed", "its sandbox crashed", task)
            return None
        if channel is not None:  # used, no longer credit; the receipt is the channel's next
            await self._money.settle(channel, amounts, response.receipt, receipt.cumulative)
            await self._spent(sum(amounts.values()), provider, task_id, task)
            self._sent(channel, provider, sum(amounts.values()), task_id)
            self._forfeits.pop(provider, None)
            if receipt.subcalls_cost:
                await self._pay_subcalls(quote, receipt, task_id, task)
            self._acknowledge(provider, str(channel.terms.stake), quote.agent, task_id)
        rtt_ms = (time.perf_counter() - started) * 1000
        return _Answer(
            provider, quote, response.output, receipt, response.receipt, rtt_ms, subcalls
        )

    @staticmethod
    def _declared(task: _Task, quote: Quote) -> dict[str, str] | None:
        """The dependencies of the release a quote names, as this node's registry
        holds them (None if it does not know the release)."""
        for release in (task.listing or {}).get("releases", []):
            if release["version"] == quote.version:
                return dict(release.get("dependencies") or {})
        return None

    async def _run_prices(self, declared: dict[str, str] | None) -> dict[str, frozenset[int]]:
        """What a run of each declared agent may cost, by this node's registry: its
        price, or a plan's run price."""
        out: dict[str, frozenset[int]] = {}
        for ref in declared or {}:
            publisher, _, name = ref.partition("/")
            shown = await self._registry.show(publisher, name)
            if shown is not None and shown.get("kind") == "agent":
                plans = (shown.get("plans") or {}).values()
                out[ref] = frozenset([int(shown["price"]), *(int(p["run_price"]) for p in plans)])
        return out

    async def _pay_subcalls(
        self, quote: Quote, receipt: Receipt, task_id: bytes, task: _Task
    ) -> None:
        """Pay a composite task's sub-calls, exactly what their checked receipts say
        (op ``pay``), inside the provider's paying lock. A payment not taken stays
        credit, which the next payment to that provider uses first."""
        provider, cost = quote.provider, receipt.subcalls_cost
        try:
            payee = Pubkey.from_string(quote.payee)
            amounts = {payee: cost}
            payment, channel, _ = await self._money.pay_for(provider, payee, amounts)
            request = TaskRequest(op="pay", agent=quote.agent, task=task_id, payment=payment)
            await self._overlay.requests.request(provider, TASK, request, timeout_s=ACK_TIMEOUT_S)
        except (SettlementError, P2PError, ValueError) as exc:
            log.warning(
                "a task's sub-calls could not be paid: %s", exc,
                extra={"peer": provider, "task": task_id.hex(), "lamports": cost},
            )  # fmt: skip
            return
        await self._money.settle(channel, amounts)
        await self._spent(cost, provider, task_id, task)
        self._sent(channel, provider, cost, task_id)

    def _acknowledge(self, provider: str, stake: str, agent: str, task_id: bytes) -> None:
        """Queue the acknowledgement of a good receipt (see `send_acks`)."""
        try:
            self._acks.send_nowait((provider, stake, agent, task_id))
        except trio.WouldBlock:
            log.warning(
                "too many receipts wait to be acknowledged: the next payment to the "
                "provider carries this one",
                extra={"peer": provider, "channel": stake, "task": task_id.hex()},
            )

    async def send_acks(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Acknowledge good receipts until cancelled: for each, the channel's latest
        payouts signed again, committing to every receipt verified on it so far,
        sent as an ``ack`` (ACK_CONCURRENCY at once)."""
        slots = trio.Semaphore(ACK_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for provider, stake, agent, task_id in self._acks_out:
                await slots.acquire()
                nursery.start_soon(self._send_ack, provider, stake, agent, task_id, slots)

    async def _send_ack(
        self, provider: str, stake: str, agent: str, task_id: bytes, slots: trio.Semaphore
    ) -> None:
        """One acknowledgement, in order with the other states to ``provider`` (its
        paying lock); nothing is sent if a later payment committed to it already.
        A failure is logged: the next payment's state carries the commitment."""
        try:
            async with self._money.paying(provider):
                payment = await self._money.acknowledgement(Pubkey.from_string(stake))
                if payment is None:
                    return
                request = TaskRequest(op="ack", agent=agent, task=task_id, payment=payment)
                await self._overlay.requests.request(
                    provider, TASK, request, timeout_s=ACK_TIMEOUT_S
                )
        except (SettlementError, P2PError) as exc:
            log.warning(
                "a receipt's acknowledgement failed (the next payment to the provider "
                "carries it): %s",
                exc,
                extra={"peer": provider, "channel": stake, "task": task_id.hex(), "why": str(exc)},
            )
        finally:
            slots.release()

    def _sent(self, channel: Channel, provider: str, lamports: int, task_id: bytes) -> None:
        """A payment this node made: into the event log (``payment.sent``)."""
        stake = str(channel.terms.stake)
        self._log.note(
            "payment.sent",
            {"channel": stake, "peer": provider, "amount": lamports, "task": task_id.hex()},
        )

    async def _spent(self, lamports: int, provider: str, task_id: bytes, task: _Task) -> None:
        """Count a price as paid today; a failed write is logged (the task goes on)."""
        try:
            await self.spending.record(lamports, provider, task_id.hex(), task.budget)
        except Exception as exc:
            log.warning("could not record a payment: %s", exc, extra={"task": task_id.hex()})

    async def _payment(
        self, quote: Quote, task: _Task
    ) -> tuple[bytes, Channel | None, dict[Pubkey, int], dict[Pubkey, int]]:
        """For a paid quote: the payment (a channel state) to send with the run, the
        channel, what the task owes, and the credit the payment relies on. A
        composite agent's shows a channel with room for its sub-calls' most too."""
        if quote.most == 0:
            return b"", None, {}, {}
        if task.listing is None:
            raise ChannelError("this node cannot pay for a listing its registry does not know")
        if (quote.creator, quote.royalty_bps) != (
            task.listing["publisher"],
            int(task.listing["royalty_bps"]),
        ):
            raise ChannelError("the quote's royalty is not the listing's this node knows")
        try:
            payee = Pubkey.from_string(quote.payee)
            creator = Pubkey.from_string(quote.creator)
        except ValueError as exc:
            raise ChannelError("the quote names no wallet to pay") from exc
        me = self._money.wallet.pubkey()
        amounts = task_amounts(quote.price, quote.royalty_bps, payee, creator, me)
        room = sum(amounts.values()) + quote.subcalls_max
        payment, channel, relied = await self._money.pay_for(
            quote.provider, payee, amounts, room=room
        )
        return payment, channel, amounts, relied

    async def _judge(
        self, provider: str, event: str, why: str, task: _Task, latency_ms: float | None = None
    ) -> None:
        """Count an attempt in the provider's reputation (and penalise cheats); the
        change is committed with the task's record."""
        self.reputation.record(provider, event, latency_ms)
        task.changed.add(provider)
        if event != "ok":
            task.fail(provider, why)
        if event in ("bad_receipt", "wrong"):
            penalty = PENALTY_WRONG if event == "wrong" else PENALTY_BAD_RECEIPT
            log.warning("provider caught: %s", why, extra={"peer": provider, "event": event})
            await self._overlay.host.penalize(provider, penalty, why)

    # -- second opinions -----------------------------------------------------------

    async def _verify(self, answer: _Answer, task: _Task) -> tuple[_Answer, str] | None:
        """Check ``answer`` when the policy says so; the answer to give the user and
        how it was checked, or None if its provider was proven wrong."""
        if task.truth is not None:  # settled earlier in this task: hold every answer to it
            return await self._settle(answer, None, task.truth, task)
        standing = self.reputation.get(answer.provider)
        due = standing.ok < self._config.verify_first or random.random() < self._config.verify_rate
        # A composite agent's answer depends on what others answered it (and a
        # second run would pay its sub-calls again): its receipts vouch for it.
        composite = bool(self._declared(task, answer.quote))
        if not due or task.listing is None or not task.verify or composite:
            await self._judge(answer.provider, "ok", "", task, answer.rtt_ms)
            return answer, "receipt"
        second = await self._second_opinion(answer, task)
        if second is not None and second.result == answer.result:
            await self._judge(answer.provider, "ok", "", task, answer.rtt_ms)
            await self._judge(second.provider, "ok", "", task, second.rtt_ms)
            return answer, "cross-checked"
        local = await self._local_results(answer, task, runs=2)
        if local is None or local[0] != local[1] or local[0][0] not in DETERMINISTIC:
            # Nothing repeatable to judge by: blame nobody, credit nobody, and give
            # the answer of the provider this node trusts more.
            log.info("a second opinion could not be settled", extra={"peer": answer.provider})
            best = answer
            if second is not None and self.reputation.score(
                second.provider
            ) > self.reputation.score(answer.provider):
                best = second
            return best, "unverified"
        task.truth = local[0]
        return await self._settle(answer, second, task.truth, task)

    async def _settle(
        self, answer: _Answer, second: _Answer | None, truth: tuple[str, bytes], task: _Task
    ) -> tuple[_Answer, str] | None:
        """Judge each answer against this node's own repeatable result."""
        for candidate in (answer, second):
            if candidate is None:
                continue
            if candidate.result == truth:
                await self._judge(candidate.provider, "ok", "", task, candidate.rtt_ms)
            elif candidate.receipt.outcome in DETERMINISTIC:
                why = "its output differs from this node's own run"
                await self._judge(candidate.provider, "wrong", why, task)
            else:  # it gave up (timeout, memory): its limits or load, not a lie
                why = f"it ended as {candidate.receipt.outcome}; this node's run did not"
                await self._judge(candidate.provider, "failed", why, task)
        for candidate in (answer, second):
            if candidate is not None and candidate.result == truth:
                return candidate, "local"
        return None

    async def _second_opinion(self, answer: _Answer, task: _Task) -> _Answer | None:
        """The same task run by another provider, or None if no other could."""
        # Its failures are not the task's; its reputation changes are.
        others = _Task(
            task.agent, task.version, task.stdin, None, task.cap, task.listing,
            tried=set(task.tried) | {answer.provider}, changed=task.changed,
            budget=task.budget,
        )  # fmt: skip
        quotes: list[_Offered] = []
        # Only a check: from a provider this node is connected to, quoting soon;
        # else this node's own runs settle it.
        with trio.move_on_after(SECOND_OPINION_QUOTES_S):
            quotes = await self._quotes_for(others, reachable_only=True)
        for offered in quotes:
            if offered.quote.version != answer.quote.version:
                continue
            second = await self._attempt(offered, secrets.token_bytes(16), others)
            if second is not None:
                return second
        return None

    async def _local_results(
        self, answer: _Answer, task: _Task, runs: int
    ) -> list[tuple[str, bytes]] | None:
        """Run the build in this node's sandbox ``runs`` times; None if it cannot."""
        cid, listing = answer.quote.cid, task.listing
        assert listing is not None
        try:
            with self._builds.using(cid):
                info = await self._builds.info(cid)
                if info is None or not info.complete:
                    with trio.fail_after(FETCH_TIMEOUT_S):
                        await self._builds.fetch(cid, await self._builds.copies(cid))
                limits = run_limits(listing, task.stdin, self._caps)
                path = self._builds.builds.path(cid)
                results = []
                for _ in range(runs):
                    result = await self._runtime.run(
                        path, task.stdin, limits, key=cid, name=listing["name"]
                    )
                    results.append((result.outcome.value, digest(result.output)))
            return results
        except (BuildError, P2PError, SandboxError, Refused, trio.TooSlowError) as exc:
            log.info("cannot run the build here to check: %s", exc, extra={"cid": cid})
            return None


def _quote_key(provider: str, task: _Task) -> tuple[str, str, str, int]:
    """Quotes are kept per provider, agent, range and budget (a composite agent's
    quote depends on the budget)."""
    return (provider, task.agent, task.version, task.budget_asked)
