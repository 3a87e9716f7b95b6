"""A composite agent's calls out: the node's side of ``mercato.call`` and ``mercato.infer``.

Provider side: `SubCalls` serves the host calls of one run. A call names a
listing the release that runs declares among its dependencies (its
``PUBLISHER/NAME``, or its bare name when one dependency has it), else it
fails ``UNDECLARED``. It runs only while the run has depth left (``TOO_DEEP``),
room in its receipt (``TOO_MANY``; the worker bounds the number of calls) and
budget: the quote's ``subcalls_max``, less what earlier sub-calls cost this
node; a call that could cost more than is left fails ``OVER_BUDGET`` without
being sent. An agent is run through this node's `TaskRunner` (paid from this
node's channels, its receipt checked, no second opinion), a model through the
`Infer` function the models part gives. Every call, failed or not, is listed
(`SubCall`) for the run's receipt; only those that succeeded are charged to
the user. A call still waiting shortly before the run's wall clock runs out
gives up (``TIMEOUT``), so that the agent hears it in time; one cancelled (the
run stopped) is listed as ``TIMEOUT`` too.

User side: `check_subcalls` checks a receipt's list before its user pays it:
every sub-receipt signed by its provider, made for this provider, for this
task and for the listing named, each listed once, charging exactly what its
receipt says if it succeeded and nothing otherwise, adding up to the
receipt's ``subcalls_cost``; a sub-agent's own sub-calls are checked the same
way. Readers of the receipts of each kind of call (`ReceiptReader`) are given
by the parts that make them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from mercato.runtime import MAX_REPLY_BYTES, HostCall, HostReply, HostStatus

from ..commerce import lowest_run_price
from ..registry import RegistryService
from ._messages import (
    MAX_DEPTH,
    MAX_SUBCALLS,
    MAX_SUBCALLS_BYTES,
    BadReceipt,
    NoProvider,
    Receipt,
    SubCall,
    TaskRefused,
    UnknownAgent,
    decode_subcalls,
    encode_subcalls,
)
from ._spending import Budget

if TYPE_CHECKING:
    from ._runner import TaskRunner

log = logging.getLogger("mercato.tasks")

REFUSED_HERE = frozenset((HostStatus.BAD_ARGUMENTS, HostStatus.TOO_MANY))

RECEIPT_ROOM = 6 * 1024  # a list this close to full takes no more calls
MAX_NOTED = 8  # room kept for the sandbox's own refusals (`RunResult.refused`)
MAX_NOTED_BYTES = MAX_NOTED * 600
ANSWER_MARGIN_S = 1.0  # a call gives up this long (at most a fifth of it) before the run
MAX_ERROR = 300


@dataclass(frozen=True)
class SubResult:
    """What one sub-call came to."""

    status: int
    """0 if it succeeded, else a `HostStatus`."""
    output: bytes = b""
    receipt: bytes = b""
    """The sub-provider's signed receipt, if one came and checked out."""
    cost: int = 0
    """What it cost this node (paid, or owed), succeeded or not."""
    error: str = ""


Infer = Callable[[str, bytes, int, bytes], Awaitable[SubResult]]
"""A model call for an agent: (the model's PUBLISHER/NAME, the OpenAI chat request
JSON, the most it may cost, the calling task) -> what it came to."""


@dataclass(frozen=True)
class Charged:
    """A sub-call's receipt, as the user's node checks it."""

    id: bytes
    provider: str
    user: str
    target: str
    parent: bytes
    ok: bool
    cost: int
    nested: bytes = b""
    """Its own sub-calls (a composite sub-agent's), checked in turn..."""
    nested_cost: int = 0
    """...and what they cost by its receipt."""


ReceiptReader = Callable[[bytes], Charged]
"""Verify a signed receipt of one kind of sub-call; BadReceipt if it does not hold."""


def read_task_receipt(signed: bytes) -> Charged:
    r = Receipt.verify(signed)
    return Charged(r.task, r.provider, r.user, r.agent, r.parent, r.outcome == "ok", r.cost,
                   r.subcalls, r.subcalls_cost)  # fmt: skip


def check_subcalls(
    receipt: Receipt,
    declared: dict[str, str] | None,
    readers: dict[str, ReceiptReader],
    prices: dict[str, frozenset[int]] | None = None,
) -> list[SubCall]:
    """The sub-calls ``receipt`` lists, if they hold up (see the module docstring);
    BadReceipt otherwise. ``declared``: the dependencies of the release that ran,
    when this node's registry knows them; ``prices``: what a run of each declared
    agent may cost, by that registry (a callee charging otherwise is refused)."""
    return _checked(receipt.subcalls, receipt.subcalls_cost, receipt.provider, receipt.task,
                    declared, readers, 0, prices or {})  # fmt: skip


def _checked(
    data: bytes,
    total: int,
    provider: str,
    task: bytes,
    declared: dict[str, str] | None,
    readers: dict[str, ReceiptReader],
    depth: int,
    prices: dict[str, frozenset[int]],
) -> list[SubCall]:
    if depth > MAX_DEPTH:
        raise BadReceipt("the receipt's sub-calls nest deeper than any task may")
    calls = decode_subcalls(data)
    seen: set[bytes] = set()
    charged_total = 0
    for call in calls:
        if not call.target:  # refused by the sandbox before it named anything
            if call.status not in REFUSED_HERE or call.receipt or call.cost:
                raise BadReceipt("it lists a call to no listing that did not fail in its sandbox")
            continue
        listed = declared is None or call.target in declared
        if not listed and call.status != HostStatus.UNDECLARED:
            raise BadReceipt(f"it lists a call to {call.target[:120]}, which it did not declare")
        if call.status != 0 and call.cost:
            raise BadReceipt("it charges for a sub-call that failed")
        if not call.receipt:
            if call.status == 0:
                raise BadReceipt("it lists a successful sub-call without its receipt")
            continue
        read = readers.get(call.op)
        if read is None:
            raise BadReceipt(f"this node cannot check a receipt of {call.op}")
        sub = read(call.receipt)
        if (sub.user, sub.parent) != (provider, task):
            raise BadReceipt("a sub-call's receipt was made for another caller or task")
        if sub.target != call.target:
            raise BadReceipt("a sub-call's receipt names another listing than the call")
        if sub.id in seen:
            raise BadReceipt("it lists one sub-call twice")
        seen.add(sub.id)
        if call.status == 0 and (not sub.ok or call.cost != sub.cost):
            raise BadReceipt("it charges a sub-call other than its receipt says")
        own = sub.cost - sub.nested_cost
        if call.op == "call" and call.target in prices and own not in prices[call.target]:
            raise BadReceipt(
                f"a sub-call's receipt asks {own} lamports for {call.target[:120]}, which "
                f"runs for {', '.join(map(str, sorted(prices[call.target])))}"
            )
        if sub.nested or sub.nested_cost:
            _checked(sub.nested, sub.nested_cost, sub.provider, sub.id, None, readers, depth + 1,
                     {})  # fmt: skip
        charged_total += call.cost
    if charged_total != total:
        raise BadReceipt(
            f"its sub-calls cost {charged_total} lamports by their receipts; it charges {total}"
        )
    return calls


def resolve_dependency(target: str, declared: dict[str, str]) -> tuple[str, str] | None:
    """The declared dependency ``target`` names (``PUBLISHER/NAME``, or a bare name
    that one dependency has) and its version range; None if none."""
    if target in declared:
        return target, declared[target]
    named = [ref for ref in declared if ref.partition("/")[2] == target]
    if "/" not in target and len(named) == 1:
        return named[0], declared[named[0]]
    return None


class SubCalls:
    """The calls out of one composite run (see the module docstring)."""

    def __init__(
        self,
        runner: TaskRunner,
        registry: RegistryService,
        infer: Infer | None,
        release: dict[str, Any],
        task: bytes,
        budget: int,
        depth: int,
        timeout_s: float,
    ) -> None:
        """``budget``: what the sub-calls may cost in all; ``depth``: the levels of
        sub-calls allowed below this run (0: none); ``timeout_s``: the run's wall
        clock, from now."""
        self._runner = runner
        self._registry = registry
        self._infer = infer
        self._declared: dict[str, str] = dict(release.get("dependencies") or {})
        self._task = task
        self._depth = depth
        self._deadline = trio.current_time() + timeout_s
        self.left = budget
        self.calls: list[SubCall] = []

    @property
    def cost(self) -> int:
        """What the user owes for the sub-calls: those that succeeded."""
        return sum(c.cost for c in self.calls)

    def encoded(self) -> bytes:
        return encode_subcalls(self.calls)

    def refused(self, refusals: tuple[tuple[str, int, str], ...]) -> None:
        """List the calls the sandbox refused itself (never sent here): bad
        arguments, past the listing's bound."""
        for op, status, message in refusals:
            if op in ("call", "infer") and len(self.calls) < MAX_SUBCALLS:
                self.calls.append(SubCall(op, "", status, message[:MAX_ERROR]))

    async def handle(self, call: HostCall) -> HostReply:
        """One host call of the guest; never raises but on cancellation (listed as
        ``TIMEOUT`` first)."""
        found = resolve_dependency(call.target, self._declared)
        if found is None:
            names = ", ".join(sorted(self._declared)) or "none"
            why = f"{call.target[:120]} is not among this release's dependencies ({names})"
            return self._listed(call.op, call.target, SubResult(HostStatus.UNDECLARED, error=why))
        ref, versions = found
        if self._depth < 1:
            why = "no more levels of sub-calls are allowed below this run (max_depth)"
            return self._listed(call.op, ref, SubResult(HostStatus.TOO_DEEP, error=why))
        full = len(self.calls) >= MAX_SUBCALLS - MAX_NOTED
        if full or len(self.encoded()) > MAX_SUBCALLS_BYTES - RECEIPT_ROOM:
            why = "the run's receipt holds no more sub-calls"
            return self._listed(call.op, ref, SubResult(HostStatus.TOO_MANY, error=why))
        try:
            # The agent hears of a call that takes too long while it still has time
            # to do something about it.
            # The worker's clock is the run's (it starts after the build is fetched
            # and a slot is free); this one only stands in when none came.
            left = call.remaining_s
            if not math.isfinite(left):
                left = self._deadline - trio.current_time()
            with trio.move_on_after(max(left - min(ANSWER_MARGIN_S, left / 5), 0)) as waited:
                if call.op == "call":
                    result = await self._call(ref, versions, call.payload)
                else:
                    result = await self._model(ref, call.payload)
            if waited.cancelled_caught:
                why = f"{ref} did not answer within the run's time"
                result = SubResult(HostStatus.TIMEOUT, error=why)
        except trio.Cancelled:
            why = "the run's time ran out while it waited"
            self._listed(call.op, ref, SubResult(HostStatus.TIMEOUT, error=why))
            raise
        self.left = max(self.left - result.cost, 0)
        if result.status == 0 and len(result.output) > MAX_REPLY_BYTES:
            why = f"the answer of {ref} is over {MAX_REPLY_BYTES} bytes: too large to hand over"
            result = SubResult(HostStatus.FAILED, receipt=result.receipt, error=why)
        reply = self._listed(call.op, ref, result)
        if len(self.encoded()) > MAX_SUBCALLS_BYTES - MAX_NOTED_BYTES:
            # A receipt the user would refuse: this call is listed without its
            # receipt, failed and free (this node paid it; the user owes nothing).
            last = self.calls[-1]
            why = "its receipt did not fit in the run's receipt"
            self.calls[-1] = SubCall(last.op, last.target, int(HostStatus.FAILED), why)
            return HostReply(int(HostStatus.FAILED), why.encode())
        return reply

    def _listed(self, op: str, target: str, result: SubResult) -> HostReply:
        charged = result.cost if result.status == 0 else 0
        self.calls.append(
            SubCall(op, target[:120], int(result.status), result.error[:MAX_ERROR],
                    result.receipt, charged)
        )  # fmt: skip
        if result.status == 0:
            return HostReply(0, result.output)
        return HostReply(int(result.status), result.error.encode()[:4096])

    async def _call(self, ref: str, versions: str, payload: bytes) -> SubResult:
        publisher, _, name = ref.partition("/")
        listing = await self._registry.show(publisher, name)
        if listing is None or listing.get("deprecated"):
            return SubResult(HostStatus.UNAVAILABLE, error=f"this node knows no listing {ref}")
        if listing.get("kind") != "agent":
            return SubResult(HostStatus.REFUSED, error=f"{ref} is a model: call it with infer")
        price = lowest_run_price(listing)
        if price > self.left:
            why = f"{ref} costs {price} lamports a run; the budget has {self.left} left"
            return SubResult(HostStatus.OVER_BUDGET, error=why)
        try:
            done = await self._runner.run(
                ref, versions, payload, max_price=self.left, budget=Budget(self.left),
                most=self.left, parent=self._task, depth=self._depth - 1, verify=False,
            )  # fmt: skip
        except TaskRefused as exc:
            return SubResult(HostStatus.REFUSED, error=str(exc))
        except UnknownAgent as exc:
            return SubResult(HostStatus.UNAVAILABLE, error=str(exc))
        except NoProvider as exc:
            return SubResult(_why_none(exc), error=str(exc))
        receipt: Receipt = done["receipt"]
        if receipt.outcome != "ok":
            why = f"{ref} ended as {receipt.outcome}"
            return SubResult(HostStatus.FAILED, receipt=done["signed"], cost=receipt.cost,
                             error=why)  # fmt: skip
        return SubResult(0, done["output"], done["signed"], receipt.cost)

    async def _model(self, ref: str, payload: bytes) -> SubResult:
        if self._infer is None:
            return SubResult(HostStatus.UNAVAILABLE, error="this node routes no model calls")
        return await self._infer(ref, payload, self.left, self._task)


def _why_none(exc: NoProvider) -> HostStatus:
    """The status of a sub-call that no provider ran."""
    if exc.over_budget:
        return HostStatus.OVER_BUDGET
    if exc.bad_receipts:
        return HostStatus.BAD_RECEIPT
    return HostStatus.UNAVAILABLE
