"""Agent cards: each provider's signed word on what it serves, gossiped with a heartbeat.

A card says which agents a node runs, at what price, its load and addresses,
the wallet (Solana address) its paid tasks pay, the models it serves (a
`ModelOffer` each: prices per 1,000 tokens, context length, measured tokens
per second, calls running or waiting), and until when it holds (``expires``).
Providers publish a fresh card on the ``mercato/cards/1`` topic every
heartbeat; a card that is not renewed expires everywhere on its own. Cards
are signed by the provider's node key (kind ``agent-card``) and checked
against its peer id before anything else; a card older (by ``seq``) than the
one held is ignored, one from the future or far
too long-lived is rejected.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from mercato.p2p import (
    FrameError,
    GossipMessage,
    Keypair,
    Message,
    MessageError,
    Overlay,
    Verdict,
    canonical_cbor,
    decode_canonical,
    public_key_of_peer,
    verify_signature,
)

CARD_KIND = "agent-card"
TOPIC = "mercato/cards/1"
MAX_TTL_S = 600.0
MAX_CARDS = 10_000


class CardRejected(Exception):
    """A card that is forged, malformed or out of bounds."""


class CardVersion(CardRejected):
    """A card of a version this node does not know (a newer node's): passed over,
    the forwarder not blamed."""


@dataclass(frozen=True)
class ModelOffer(Message):
    """One model in a provider's card: what it serves now, at what prices, how fast."""

    TYPE: ClassVar[str] = "model.offer"
    model: str = field(metadata={"max_len": 120})  # PUBLISHER/NAME of a model listing
    input_price: int = field(metadata={"min": 0, "max": 10**15})  # lamports per 1,000 tokens
    output_price: int = field(metadata={"min": 0, "max": 10**15})
    context_length: int = field(metadata={"min": 1, "max": 10**7})
    tokens_per_s: float = field(default=0.0, metadata={"min": 0, "max": 1e9})
    queue: int = field(default=0, metadata={"min": 0, "max": 10**6})  # calls running or waiting


@dataclass(frozen=True)
class AgentCard(Message):
    TYPE: ClassVar[str] = "agent.card"
    VERSION: ClassVar[int] = 3  # 2: the wallet paid tasks pay; 3: the models served
    provider: str = field(metadata={"max_len": 64})
    seq: int = field(metadata={"min": 0, "max": 2**62})
    expires: float = field(metadata={"min": 0})
    agents: list[str] = field(default_factory=list, metadata={"max_len": 256, "item_max_len": 120})
    prices: list[int] = field(default_factory=list, metadata={"max_len": 256})
    load: float = field(default=0.0, metadata={"min": 0, "max": 1e6})
    addrs: list[str] = field(default_factory=list, metadata={"max_len": 8, "item_max_len": 256})
    wallet: str = field(default="", metadata={"max_len": 64})
    models: list[dict] = field(default_factory=list, metadata={"max_len": 64})

    def to_wire(self) -> dict[str, Any]:
        """A card that offers no model keeps version 2's form, which every node
        since version 2 takes (only model providers need version 3)."""
        out = super().to_wire()
        if not self.models:
            del out["models"]
            out["v"] = 2
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> AgentCard:
        if isinstance(obj, dict) and obj.get("v") == 2 and "models" not in obj:
            obj = {**obj, "v": cls.VERSION}
        elif isinstance(obj, dict) and obj.get("v") not in (2, cls.VERSION):
            raise CardVersion(f"a card of version {obj.get('v')!r}: this node takes 2 and 3")
        return super().from_wire(obj)

    def sign(self, keypair: Keypair) -> bytes:
        body = self.to_wire()
        return canonical_cbor({"card": body, "sig": keypair.sign(CARD_KIND, body)})

    @classmethod
    def verify(cls, data: bytes, now: float | None = None) -> AgentCard:
        """Decode, check the signature against the provider's peer id, and the
        expiry; CardRejected if any fails."""
        try:
            obj = decode_canonical(data)
            body, sig = obj["card"], obj["sig"]
            card = cls.from_wire(body)
            key = public_key_of_peer(card.provider)
        except CardVersion:
            raise
        except (FrameError, MessageError, KeyError, TypeError, ValueError) as exc:
            raise CardRejected(f"not an agent card: {exc}") from exc
        if len(card.prices) != len(card.agents) or any(p < 0 for p in card.prices):
            raise CardRejected("a card names a price (>= 0) for each agent")
        try:
            card.offers()
        except MessageError as exc:
            raise CardRejected(f"a card's model offer is malformed: {exc}") from exc
        if not isinstance(sig, bytes) or not verify_signature(key, CARD_KIND, body, sig):
            raise CardRejected(f"the card is not signed by {card.provider}")
        now = time.time() if now is None else now
        if card.expires > now + MAX_TTL_S:
            raise CardRejected("the card claims to hold too long")
        return card

    def offers(self) -> list[ModelOffer]:
        """The models this card offers; MessageError if one is malformed."""
        return [ModelOffer.from_wire(m) for m in self.models]


class CardBook:
    """The freshest unexpired card of each provider."""

    def __init__(self) -> None:
        self._cards: dict[str, AgentCard] = {}

    def add(self, card: AgentCard, now: float | None = None) -> bool:
        """Keep ``card`` if it is newer than the one held; return whether it was news."""
        now = time.time() if now is None else now
        if card.expires <= now:
            return False
        held = self._cards.get(card.provider)
        if held is not None and held.seq >= card.seq:
            return False
        if held is None and len(self._cards) >= MAX_CARDS:
            self.prune(now)
            if len(self._cards) >= MAX_CARDS:
                return False
        self._cards[card.provider] = card
        return True

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for provider in [p for p, c in self._cards.items() if c.expires <= now]:
            del self._cards[provider]

    def candidates(self, agent: str, now: float | None = None) -> list[dict[str, Any]]:
        """Providers whose live card serves ``agent``: cheapest first, then least loaded."""
        self.prune(now)
        out = []
        for card in self._cards.values():
            if agent in card.agents:
                price = card.prices[card.agents.index(agent)]
                out.append(
                    {
                        "provider": card.provider,
                        "price": price,
                        "load": card.load,
                        "expires": card.expires,
                        "addrs": list(card.addrs),
                    }
                )
        return sorted(out, key=lambda c: (c["price"], c["load"]))

    def model_candidates(self, model: str, now: float | None = None) -> list[dict[str, Any]]:
        """Providers whose live card offers ``model``, with their offer, addresses and
        wallet: cheapest (input and output price together) first."""
        self.prune(now)
        out = []
        for card in self._cards.values():
            for offer in card.offers():
                if offer.model == model:
                    out.append(
                        {
                            "provider": card.provider,
                            "offer": offer,
                            "expires": card.expires,
                            "addrs": list(card.addrs),
                            "wallet": card.wallet,
                        }
                    )
        return sorted(out, key=lambda c: c["offer"].input_price + c["offer"].output_price)

    def models(self, now: float | None = None) -> dict[str, list[tuple[str, ModelOffer]]]:
        """Every model some live card offers, with its (provider, offer) pairs."""
        self.prune(now)
        found: dict[str, list[tuple[str, ModelOffer]]] = {}
        for card in self._cards.values():
            for offer in card.offers():
                found.setdefault(offer.model, []).append((card.provider, offer))
        return found

    def wallet_of(self, provider: str, now: float | None = None) -> str:
        """The wallet ``provider``'s live card names, or ""."""
        self.prune(now)
        card = self._cards.get(provider)
        return card.wallet if card else ""


def card_verdict(cards: CardBook, data: bytes, own_peer: str) -> Verdict:
    """Gossip's verdict on a card: forward what is new and sound, drop the rest
    (blaming the forwarder only for a forged or malformed card)."""
    try:
        card = AgentCard.verify(data)
    except CardVersion:
        return Verdict.IGNORE
    except CardRejected:
        return Verdict.REJECT
    return Verdict.ACCEPT if cards.add(card) or card.provider == own_peer else Verdict.IGNORE


class CardForwarder:
    """A relay's part in card gossip: it checks cards and passes them on, so that
    peers reached only through it hear each other's; it serves nothing itself."""

    def __init__(self, overlay: Overlay) -> None:
        self._overlay = overlay
        self.cards = CardBook()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._overlay.gossip.subscribe(TOPIC, self._on_card, self._validate)
        task_status.started()
        await trio.sleep_forever()

    async def _validate(self, message: GossipMessage) -> Verdict:
        return card_verdict(self.cards, message.data, self._overlay.peer_id)

    async def _on_card(self, message: GossipMessage) -> None:
        pass  # taken in the validator
