"""Provider choice: one documented score over price, reputation, latency and load.

Each candidate gets a score in [0, 1]; the highest is asked first, the next
on failure. With ``p`` its price, ``P`` the highest price among the candidates,
``r`` its reputation (see `_reputation`), ``l`` its expected latency in ms and
``q`` its load (runs running or waiting on it, as it says, plus this node's own
tasks in flight to it):

    score = 0.35 * (1 - p / P) * k        cheaper is better   (1 when all are free)
          + 0.35 * r                      trusted is better
          + 0.20 * 1 / (1 + l / 100)      faster is better    (halves at 100 ms)
          + 0.10 * 1 / (1 + q)            idle is better

with ``k`` 1 for a provider that has run a task for this node and 0 for one
that has not: anyone can sign a card with a fresh key and any price, so a
price earns nothing until it comes with a task done (a free card cannot
outrank a proven provider by price alone; it still gets its turn when the
proven ones fail, or among strangers on reputation, latency and load).

Ties go to the lower peer id, so a choice is reproducible. Before quotes the
same score runs on what the cards say (their price and load, and the latency
this node has measured), to pick whom to ask for a quote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WEIGHTS = {"price": 0.35, "reputation": 0.35, "latency": 0.20, "load": 0.10}
LATENCY_SCALE_MS = 100.0
UNKNOWN_LATENCY_MS = 100.0


@dataclass(frozen=True)
class Offer:
    """What is known of one candidate when choosing."""

    provider: str
    price: int
    reputation: float
    latency_ms: float | None
    load: float
    proven: bool = True
    """It has run a task for this node: only then does its price count."""


def _sane(value: float, worst: float) -> float:
    """A peer's number as a score can use: NaN or out of range counts as the worst."""
    return value if math.isfinite(value) and 0 <= value <= worst else worst


def score(offer: Offer, highest_price: int) -> float:
    price = 1.0 - offer.price / highest_price if highest_price > 0 else 1.0
    price = price if offer.proven else 0.0
    latency = UNKNOWN_LATENCY_MS if offer.latency_ms is None else offer.latency_ms
    return (
        WEIGHTS["price"] * price
        + WEIGHTS["reputation"] * offer.reputation
        + WEIGHTS["latency"] / (1.0 + _sane(latency, 1e9) / LATENCY_SCALE_MS)
        + WEIGHTS["load"] / (1.0 + _sane(offer.load, 1e9))
    )


def rank(offers: list[Offer]) -> list[tuple[float, Offer]]:
    """Offers with their scores, best first."""
    highest = max((o.price for o in offers), default=0)
    scored = [(score(o, highest), o) for o in offers]
    scored.sort(key=lambda pair: (-pair[0], pair[1].provider))
    return scored
