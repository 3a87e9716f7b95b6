"""A provider's check that a task's user holds a licence for what it asks to run.

A listing with plans runs only for the holder of a licence token that its
creator minted (see `mercato.settlement.check_licence`). The user's node sends
a `LicenceUse` signed by the holder's account key with each quote and run; the
provider verifies it, reads the mint and the holder's token account from its
ledger and checks them. An answer is cached for CACHE_S (and never past the
licence's expiry), so a run right after its quote costs a dictionary lookup;
a refund is seen once the cached answer ages out, and a restarted provider
reads the ledger afresh.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import trio
from solders.pubkey import Pubkey

from mercato.crdt import Version, VersionRange
from mercato.settlement import (
    Ledger,
    Licence,
    LicenceError,
    SettlementError,
    check_licence,
    licence_account,
    read_licence,
)

from ._errors import BadSignedObject, LicenceRefused, LicenceRequired
from ._messages import LicenceUse

CACHE_S = 10.0
MAX_CACHED = 10_000


@dataclass(frozen=True)
class Entitled:
    """A licence that holds, and the plan of the listing it was bought under."""

    licence: Licence
    plan: dict[str, Any]

    def covers(self, version: str) -> bool:
        return VersionRange.parse(self.licence.versions).matches(Version.parse(version))


def plans_text(agent: str, plans: dict[str, Any]) -> str:
    """The plans of ``agent`` in one line, and how to buy one."""
    shown = []
    for name, plan in sorted(plans.items()):
        period = f" per {plan['period_days']} days" if plan["kind"] == "subscription" else ""
        shown.append(
            f"{name} ({plan['kind']}, {plan['price']} lamports{period}, {plan['versions']})"
        )
    first = sorted(plans)[0] if plans else "NAME"
    return f"plans: {', '.join(shown)}; buy one with `mercato buy {agent} --plan {first}`"


class Entitlements:
    """Checks licences against the ledger for a provider whose peer id is ``me``."""

    def __init__(self, ledger: Ledger, me: str) -> None:
        self._ledger = ledger
        self._me = me
        self._cache: dict[tuple[bytes, str, str], tuple[float, Entitled]] = {}

    def forget(self, mint: str) -> None:
        """Drop cached answers for ``mint`` (its creator's node just refunded it)."""
        for key in [k for k, (_, e) in self._cache.items() if str(e.licence.mint) == mint]:
            del self._cache[key]

    async def check(self, listing: dict[str, Any], use: bytes, user: str) -> Entitled | None:
        """None for a listing without plans; else the licence ``use`` shows, if it
        holds. LicenceRequired without one; LicenceRefused if it does not hold up."""
        plans = listing.get("plans") or {}
        if not plans:
            return None
        agent = f"{listing['publisher']}/{listing['name']}"
        if not use:
            raise LicenceRequired(
                f"{agent} runs only under a licence or subscription; " + plans_text(agent, plans)
            )
        now = time.time()
        cached = self._cache.get((use, agent, user))
        if cached is not None and cached[0] > trio.current_time():
            expires = cached[1].licence.expires
            if not expires or expires > now:
                return cached[1]
        entitled = await self._read(listing, agent, plans, use, user, now)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[(use, agent, user)] = (trio.current_time() + CACHE_S, entitled)
        return entitled

    async def _read(
        self,
        listing: dict[str, Any],
        agent: str,
        plans: dict[str, Any],
        use: bytes,
        user: str,
        now: float,
    ) -> Entitled:
        try:
            shown = LicenceUse.verify(use)
        except BadSignedObject as exc:
            raise LicenceRefused(f"the licence shown is not sound: {exc}") from exc
        if shown.provider != self._me or shown.user != user:
            raise LicenceRefused("the licence shown names another provider or peer than this one")
        try:
            mint, holder = Pubkey.from_string(shown.mint), Pubkey.from_string(shown.holder)
            creator = Pubkey.from_string(listing["publisher"])
            mint_account = await self._ledger.account(mint)
            holder_account = await self._ledger.account(licence_account(holder, mint))
            licence = read_licence(mint, mint_account, holder, holder_account)
            check_licence(licence, creator=creator, listing=agent, holder=holder, now=int(now))
        except ValueError as exc:
            raise LicenceRefused("the licence shown names no valid accounts") from exc
        except LicenceError as exc:
            raise LicenceRefused(str(exc)) from exc
        except SettlementError as exc:
            raise LicenceRefused(f"this provider cannot read the ledger now: {exc}") from exc
        plan = plans.get(licence.plan)
        if plan is None:
            raise LicenceRefused(
                f"{agent} no longer offers the plan {licence.plan!r} this licence was sold under"
            )
        return Entitled(licence, plan)


def run_price(listing: dict[str, Any], entitled: Entitled | None) -> int:
    """What one run costs: the plan's run price under a licence, else the listing's."""
    return int(entitled.plan["run_price"]) if entitled is not None else int(listing["price"])


def lowest_run_price(listing: dict[str, Any]) -> int:
    """The least a run of ``listing`` can cost (its cards advertise it)."""
    plans = listing.get("plans") or {}
    return min((int(p["run_price"]) for p in plans.values()), default=int(listing["price"]))
