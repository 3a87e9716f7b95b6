"""The user's side of tasks: choose a provider, run, check, retry, remember.

`TaskRunner.run` takes one task from the user's node to an answer it can trust:

1. Candidates come from live agent cards (and, when no card names the agent,
   from DHT provider records), without those over the user's price cap.
2. The best few by `_choice.rank` (price, reputation, latency, load) are asked
   for a signed quote at once; quotes later than ``quote_deadline_s`` are not
   waited for, unless none has come yet (then the first one ends the wait). A
   quote is reused until shortly before it expires.
3. The best quote is run. The receipt must be the quoting provider's, for this
   task, input, output, price and the build this node's registry binds to the
   release. Anything else is a bad receipt: the provider is penalised and the
   next quote is tried, up to ``max_attempts`` providers.
4. The first ``verify_first`` tasks of each provider, and ``verify_rate`` of the
   rest, get a second opinion: another provider, or this node's own sandbox.
   When they disagree this node runs the build itself, twice; a deterministic
   result decides who was wrong (reputation ``wrong``, and a penalty), and a
   provider proven wrong is replaced by the next.
5. Every attempt counts in the provider's reputation; the task and its
   attempts go into the task log.

Cancellation: a cancelled run leaves no record; reputation counts only the
attempts that finished.
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

from crdt import Version, VersionError, VersionRange
from p2p import DhtError, Overlay, P2PError, Refused, RemoteError, RequestTimeout
from runtime import SandboxError, WorkerPool

from ._builds import BuildError
from ._buildservice import BuildService
from ._cards import CardBook
from ._choice import Offer, rank
from ._config import RuntimeSection, TasksSection
from ._registry import RegistryService
from ._reputation import ReputationBook, Standing
from ._store import Store
from ._tasklog import TaskLog, TaskRecord
from ._tasks import (
    TASK,
    BadReceipt,
    NoProvider,
    Quote,
    Receipt,
    TaskRefused,
    TaskRequest,
    UnknownAgent,
    digest,
)
from ._taskservice import run_limits

log = logging.getLogger("mercato.tasks")

QUOTE_REUSE_MARGIN_S = 5.0
QUOTE_TIMEOUT_S = 10.0  # past the deadline, how long the first quote may take
PENALTY_BAD_RECEIPT = 50.0
PENALTY_WRONG = 60.0  # two wrong outputs and this node bans the provider
FETCH_TIMEOUT_S = 60.0
# Refusals that every provider would give: the task fails at once.
FINAL_REFUSALS = {"input_too_large", "bad_request"}


@dataclass(frozen=True)
class _Offered:
    """A verified quote with the signed bytes that go back with the run."""

    quote: Quote
    signed: bytes


@dataclass
class _Answer:
    provider: str
    quote: Quote
    output: bytes
    receipt: Receipt
    signed: bytes
    rtt_ms: float

    @property
    def result(self) -> tuple[str, bytes]:
        return self.receipt.outcome, self.receipt.output_hash


@dataclass
class _Attempts:
    """What happened to one task so far."""

    tried: set[str] = field(default_factory=set)
    failures: list[dict[str, str]] = field(default_factory=list)
    changed: dict[str, Standing] = field(default_factory=dict)  # reputation to commit

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
        cards: CardBook,
        tasklog: TaskLog,
        caps: RuntimeSection,
        config: TasksSection,
    ) -> None:
        self._overlay = overlay
        self._registry = registry
        self._builds = builds
        self._runtime = runtime
        self._store = store
        self._cards = cards
        self._log = tasklog
        self._caps = caps
        self._config = config
        self.reputation = ReputationBook(config.reputation_half_life_h * 3600)
        self._quotes: dict[tuple[str, str, str], _Offered] = {}
        self._inflight: dict[str, int] = {}

    async def load(self) -> None:
        await self._store.run(self.reputation.load, self._store.db)

    async def _record(self, record: TaskRecord, attempts: _Attempts) -> None:
        await self._log.write(record, attempts.changed.values())

    # -- the journey -------------------------------------------------------------

    async def run(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None = None,
        max_price: int | None = None,
    ) -> dict[str, Any]:
        """Run ``agent`` and return ``{task, output, receipt, provider, verified,
        attempts}``. Raises UnknownAgent, TaskRefused or NoProvider."""
        listing = await self._listing(agent, version, stdin, max_price, pinned=provider)
        # Without a cap, pay no more than the creator lists (nothing, for an unknown listing).
        cap = max_price if max_price is not None else int((listing or {}).get("price", 0))
        task = secrets.token_bytes(16)
        attempts = _Attempts()
        started = time.time()
        try:
            answer, verified = await self._first_good(
                agent, version, stdin, task, provider, cap, listing, attempts
            )
        except NoProvider as exc:
            await self._record(
                TaskRecord(
                    task.hex(), "user", agent, version, provider or "", self._overlay.peer_id,
                    "failed", 0, started, 0, "", str(exc), attempts.failures,
                ),
                attempts,
            )  # fmt: skip
            raise
        receipt = answer.receipt
        await self._record(
            TaskRecord(
                task.hex(), "user", agent, receipt.version, answer.provider, receipt.user,
                receipt.outcome, receipt.price, started, receipt.wall_ms, verified, "",
                attempts.failures, answer.signed,
            ),
            attempts,
        )  # fmt: skip
        return {
            "task": task.hex(),
            "output": answer.output,
            "receipt": receipt,
            "provider": answer.provider,
            "verified": verified,
            "attempts": attempts.failures,
        }

    async def _listing(
        self, agent: str, version: str, stdin: bytes, cap: int | None, pinned: str | None
    ) -> dict[str, Any] | None:
        """This node's view of the listing; refuse what no provider could run."""
        publisher, _, name = agent.partition("/")
        try:
            wanted = VersionRange.parse(version)
        except VersionError as exc:
            raise TaskRefused(str(exc)) from None
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
            raise TaskRefused(exc.message) from None
        if cap is not None and int(listing["price"]) > cap:
            raise TaskRefused(
                f"{agent} costs {listing['price']} lamports a task, over --max-price {cap}"
            )
        return listing

    async def _first_good(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        task: bytes,
        pinned: str | None,
        cap: int,
        listing: dict[str, Any] | None,
        attempts: _Attempts,
    ) -> tuple[_Answer, str]:
        while len(attempts.tried) < self._config.max_attempts:
            quotes = await self._quotes_for(agent, version, stdin, pinned, cap, attempts)
            if not quotes:
                break
            answer = await self._attempt(quotes[0], task, stdin, cap, attempts)
            if answer is None:
                continue
            verified = await self._verify(answer, version, stdin, cap, listing, attempts)
            if verified is not None:
                return verified
        if not attempts.failures:
            prices = [c["price"] for c in self._cards.candidates(agent)]
            if prices and min(prices) > cap:
                raise NoProvider(
                    f"every provider of {agent} asks more than {cap} lamports (the cheapest, "
                    f"{min(prices)}): raise --max-price"
                )
            raise NoProvider(f"no provider of {agent} is known: none has sent an agent card")
        said = "; ".join(f"{f['provider'][:16]}…: {f['error']}" for f in attempts.failures[:4])
        raise NoProvider(f"no provider ran {agent}: {said}")

    # -- candidates and quotes ---------------------------------------------------

    async def _candidates(self, agent: str, cap: int | None) -> list[dict[str, Any]]:
        host = self._overlay.host
        found = [
            c
            for c in self._cards.candidates(agent)
            if c["provider"] != self._overlay.peer_id
            and not host.is_banned(c["provider"])
            and (cap is None or c["price"] <= cap)
        ]
        if found or self._cards.candidates(agent):
            return found
        try:  # nobody's card names it: ask the DHT who announced it
            with trio.move_on_after(self._config.quote_deadline_s):
                records = await self._overlay.dht.find_providers(f"agent:{agent}", 8)
                return [
                    {"provider": r.peer_id, "price": 0, "load": 0.0, "addrs": list(r.addrs)}
                    for r in records
                    if r.peer_id != self._overlay.peer_id
                ]
        except DhtError:
            pass
        return []

    def _offer(self, provider: str, price: int, load: float, extra_ms: float = 0.0) -> Offer:
        standing = self.reputation.get(provider)
        latency = None if standing.latency_ms is None else standing.latency_ms + extra_ms
        return Offer(
            provider, price, standing.score, latency, load + self._inflight.get(provider, 0)
        )

    async def _quotes_for(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        pinned: str | None,
        cap: int | None,
        attempts: _Attempts,
    ) -> list[_Offered]:
        """Valid quotes from untried candidates, best first (empty when none is left)."""
        if pinned is not None:
            names = [] if pinned in attempts.tried else [(pinned, [])]
        else:
            candidates = [
                c for c in await self._candidates(agent, cap) if c["provider"] not in attempts.tried
            ]
            ranked = rank([self._offer(c["provider"], c["price"], c["load"]) for c in candidates])
            addrs = {c["provider"]: c["addrs"] for c in candidates}
            names = [
                (o.provider, addrs[o.provider]) for _, o in ranked[: self._config.quote_fanout]
            ]
        quotes: list[_Offered] = []
        if names:
            await self._gather(names, agent, version, stdin, cap, quotes, attempts)
        offers = {o.quote.provider: o for o in quotes}
        ranked = rank(
            [
                self._offer(q.provider, q.price, q.load, q.expected_ms)
                for q in (o.quote for o in quotes)
            ]
        )
        return [offers[o.provider] for _, o in ranked]

    async def _gather(
        self,
        names: list[tuple[str, list[str]]],
        agent: str,
        version: str,
        stdin: bytes,
        cap: int | None,
        quotes: list[_Offered],
        attempts: _Attempts,
    ) -> None:
        """Ask for quotes at once; stop at the deadline if any came, else at the first."""
        remaining = len(names)
        got = trio.Event()
        async with trio.open_nursery() as nursery:

            async def ask(provider: str, addrs: list[str]) -> None:
                nonlocal remaining
                try:
                    await self._quote(provider, addrs, agent, version, stdin, cap, quotes, attempts)
                finally:
                    if quotes:
                        got.set()
                    remaining -= 1
                    if not remaining:  # everyone answered: no need to wait for the deadline
                        nursery.cancel_scope.cancel()

            async def cutoff() -> None:
                await trio.sleep(self._config.quote_deadline_s)
                await got.wait()  # a slow network still gets its first quote
                nursery.cancel_scope.cancel()

            for provider, addrs in names:
                nursery.start_soon(ask, provider, addrs)
            nursery.start_soon(cutoff)

    async def _quote(
        self,
        provider: str,
        addrs: list[str],
        agent: str,
        version: str,
        stdin: bytes,
        cap: int | None,
        out: list[_Offered],
        attempts: _Attempts,
    ) -> None:
        key = (provider, agent, version)
        cached = self._quotes.get(key)
        if cached is not None and cached.quote.expires - QUOTE_REUSE_MARGIN_S > time.time():
            if cap is None or cached.quote.price <= cap:
                out.append(cached)
            return
        self._quotes.pop(key, None)
        with trio.move_on_after(QUOTE_TIMEOUT_S) as scope:
            try:
                await self._reach(provider, addrs)
                request = TaskRequest(op="quote", agent=agent, version=version,
                                      input_size=len(stdin))  # fmt: skip
                response = await self._overlay.requests.request(provider, TASK, request)
                quote = Quote.verify(response.quote)
                self._check_quote(quote, provider, agent, version)
                await self._check_build(agent, quote.version, quote.cid)
            except BadReceipt as exc:
                await self._judge(provider, "bad_receipt", str(exc), attempts)
                return
            except RemoteError as exc:
                await self._judge(provider, "refused", f"{exc.code}: {exc}", attempts)
                return
            except P2PError as exc:
                await self._judge(provider, "failed", str(exc), attempts)
                return
        if scope.cancelled_caught:
            await self._judge(provider, "failed", f"no quote in {QUOTE_TIMEOUT_S:g} s", attempts)
            return
        offered = _Offered(quote, response.quote)
        if len(self._quotes) > 4096:
            self._quotes.clear()
        self._quotes[key] = offered
        if cap is not None and quote.price > cap:  # an honest price, just over the cap
            attempts.fail(provider, f"asks {quote.price} lamports, over the cap of {cap}")
            return
        out.append(offered)

    def _check_quote(self, quote: Quote, provider: str, agent: str, version: str) -> None:
        if quote.provider != provider or quote.user != self._overlay.peer_id:
            raise BadReceipt("the quote is another provider's or for another user")
        if quote.agent != agent:
            raise BadReceipt("the quote is for another agent")
        try:
            if not VersionRange.parse(version).matches(Version.parse(quote.version)):
                raise BadReceipt(f"the quote offers {quote.version}, outside {version}")
        except VersionError:
            raise BadReceipt("the quote's version is not semver") from None
        if quote.expires <= time.time():
            raise BadReceipt("the quote arrived expired")

    async def _check_build(self, agent: str, version: str, cid: str) -> None:
        """The build offered must be the one this node's registry binds to that release."""
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name)
        for release in (shown or {}).get("releases", []):
            if release["version"] == version and release["cid"] != cid:
                raise BadReceipt(f"the provider offers {cid}, not the release's build")

    async def _reach(self, provider: str, addrs: list[str]) -> None:
        host = self._overlay.host
        if provider in host.connected_peers():
            return
        for addr in addrs[:2]:
            with contextlib.suppress(P2PError):
                await host.connect(addr if "/p2p/" in addr else f"{addr}/p2p/{provider}")
                return

    # -- running -------------------------------------------------------------------

    async def _attempt(
        self, offered: _Offered, task: bytes, stdin: bytes, cap: int | None, attempts: _Attempts
    ) -> _Answer | None:
        """Run the task under a quote; None (and the failure counted) if it did not
        come back good."""
        quote = offered.quote
        provider = quote.provider
        request = TaskRequest(
            op="run", agent=quote.agent, version=quote.version, input_size=len(stdin),
            task=task, quote=offered.signed, input=stdin,
            max_price=quote.price if cap is None else cap,
        )  # fmt: skip
        self._inflight[provider] = self._inflight.get(provider, 0) + 1
        started = time.perf_counter()
        try:
            with trio.fail_after(self._config.timeout_s):
                response = await self._overlay.requests.request(provider, TASK, request)
            signed = response.receipt
            receipt = Receipt.verify(signed)
            receipt.check(task, quote, stdin, response.output)
        except BadReceipt as exc:
            await self._judge(provider, "bad_receipt", str(exc), attempts)
            return None
        except RemoteError as exc:
            if exc.code in ("quote_expired", "quote_stale"):
                self._quotes.pop((provider, quote.agent, quote.version), None)
            if exc.code in FINAL_REFUSALS:
                raise TaskRefused(f"{provider[:16]}… refused: {exc}") from None
            await self._judge(provider, "refused", f"{exc.code}: {exc}", attempts)
            return None
        except (P2PError, trio.TooSlowError) as exc:
            self._quotes.pop((provider, quote.agent, quote.version), None)
            why = "timed out" if isinstance(exc, trio.TooSlowError | RequestTimeout) else str(exc)
            await self._judge(provider, "failed", why, attempts)
            return None
        finally:
            self._inflight[provider] -= 1
            if not self._inflight[provider]:
                del self._inflight[provider]
        if receipt.outcome == "crashed":  # the provider's sandbox failed, not the agent
            await self._judge(provider, "failed", "its sandbox crashed", attempts)
            return None
        rtt_ms = (time.perf_counter() - started) * 1000
        return _Answer(provider, quote, response.output, receipt, signed, rtt_ms)

    async def _judge(
        self,
        provider: str,
        event: str,
        why: str,
        attempts: _Attempts,
        latency_ms: float | None = None,
    ) -> None:
        """Count an attempt in the provider's reputation (and penalise cheats); the
        change is committed with the task's record."""
        attempts.changed[provider] = self.reputation.record(provider, event, latency_ms)
        if event != "ok":
            attempts.fail(provider, why)
        if event in ("bad_receipt", "wrong"):
            penalty = PENALTY_WRONG if event == "wrong" else PENALTY_BAD_RECEIPT
            log.warning("provider caught: %s", why, extra={"peer": provider, "event": event})
            await self._overlay.host.penalize(provider, penalty, why)

    # -- second opinions -----------------------------------------------------------

    async def _verify(
        self,
        answer: _Answer,
        version: str,
        stdin: bytes,
        cap: int | None,
        listing: dict[str, Any] | None,
        attempts: _Attempts,
    ) -> tuple[_Answer, str] | None:
        """Check ``answer`` when the policy says so; the answer to give the user and
        how it was checked, or None if its provider was proven wrong."""
        provider = answer.provider
        standing = self.reputation.get(provider)
        due = standing.ok < self._config.verify_first or random.random() < self._config.verify_rate
        if not due or listing is None:
            await self._judge(provider, "ok", "", attempts, answer.rtt_ms)
            return answer, "receipt"
        second = await self._second_opinion(answer, version, stdin, cap, attempts)
        if second is not None and second.result == answer.result:
            await self._judge(provider, "ok", "", attempts, answer.rtt_ms)
            await self._judge(second.provider, "ok", "", attempts, second.rtt_ms)
            return answer, "cross-checked"
        local = await self._local_results(answer, listing, stdin, runs=2)
        if local is None or local[0] != local[1]:
            # No build to run, or the agent is not deterministic: nobody can be
            # blamed, and nobody earns credit.
            log.info(
                "a second opinion could not be settled",
                extra={"peer": provider, "second": second.provider if second else None},
            )
            return answer, "unverified"
        truth = local[0]
        for candidate in (answer, second):
            if candidate is None:
                continue
            if candidate.result == truth:
                await self._judge(candidate.provider, "ok", "", attempts, candidate.rtt_ms)
            else:
                await self._judge(
                    candidate.provider, "wrong", "its output differs from a local run", attempts
                )
        if answer.result == truth:
            return answer, "local"
        if second is not None and second.result == truth:
            return second, "local"
        return None

    async def _second_opinion(
        self, answer: _Answer, version: str, stdin: bytes, cap: int | None, attempts: _Attempts
    ) -> _Answer | None:
        """The same task run by another provider, or None if no other could."""
        # Its failures are not the task's; its reputation changes are.
        others = _Attempts(tried=set(attempts.tried) | {answer.provider}, changed=attempts.changed)
        quotes = await self._quotes_for(answer.quote.agent, version, stdin, None, cap, others)
        for offered in quotes:
            if offered.quote.version != answer.quote.version:
                continue
            task = secrets.token_bytes(16)
            second = await self._attempt(offered, task, stdin, cap, others)
            if second is not None:
                return second
        return None

    async def _local_results(
        self, answer: _Answer, listing: dict[str, Any], stdin: bytes, runs: int
    ) -> list[tuple[str, bytes]] | None:
        """Run the build in this node's sandbox ``runs`` times; None if it cannot."""
        cid = answer.quote.cid
        try:
            with self._builds.using(cid):
                info = await self._builds.info(cid)
                if info is None or not info.complete:
                    with trio.fail_after(FETCH_TIMEOUT_S):
                        await self._builds.fetch(cid, await self._builds.copies(cid))
                limits = run_limits(listing, stdin, self._caps)
                path = self._builds.builds.path(cid)
                results = []
                for _ in range(runs):
                    result = await self._runtime.run(
                        path, stdin, limits, key=cid, name=listing["name"]
                    )
                    results.append((result.outcome.value, digest(result.output)))
            return results
        except (BuildError, P2PError, SandboxError, Refused, trio.TooSlowError) as exc:
            log.info("cannot run the build here to check: %s", exc, extra={"cid": cid})
            return None
