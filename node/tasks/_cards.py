"""Agent cards: each provider's signed word on what it serves, and how a node finds them.

A card says which agents a node runs, at what price, its load and addresses,
the wallet (Solana address) its paid tasks pay, the models it serves (a
`ModelOffer` each: prices per 1,000 tokens, context length, measured tokens
per second, calls running or waiting), and until when it holds (``expires``).
Cards are signed by the provider's node key (kind ``agent-card``) and checked
against its peer id before anything else; a card older (by ``seq``) than the
one held is ignored, one from the future or far too long-lived is rejected.

How cards travel (protocol ``/mercato/card/1.0.0`` and topics
``mercato/cards/2/<group>``): every listing ref (``PUBLISHER/NAME``) falls in
one of 256 groups (the first byte of its SHA-256), and each group has a
gossip topic. A provider publishes its card every heartbeat on the topic of
each group its agents and models fall in, and announces a DHT provider record
under each ref (`provider_key`). A node joins only the groups of what it
serves or follows, so its gossip load grows with those, not with the
network. To follow a ref it has no card for, a node asks the DHT for its
providers and fetches each one's current card directly (`CARD`: an empty
request, the signed card as answer), which also connects it to them, so that
later cards reach it on the group's topic. A relay (`CardForwarder`) joins
every group so that peers reached only through it hear each other's.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from mercato.p2p import (
    DhtError,
    FrameError,
    GossipMessage,
    Keypair,
    Message,
    MessageError,
    Overlay,
    P2PError,
    RequestProtocol,
    Verdict,
    canonical_cbor,
    decode_canonical,
    public_key_of_peer,
    verify_signature,
)

log = logging.getLogger("mercato.tasks")

CARD_KIND = "agent-card"
TOPIC_PREFIX = "mercato/cards/2/"
GROUPS = 256
MAX_TTL_S = 600.0
MAX_CARDS = 10_000
MAX_CARD_BYTES = 96 * 1024  # 256 agents and 64 models at their longest, signed

LOOKUP_PROVIDERS = 8  # providers whose cards a first look-up fetches
LOOKUP_AGAIN_S = 5.0  # a ref with no live card is looked up again after this
REFRESH_S = 120.0  # followed refs are looked up again this often: new providers, new links
REFRESH_WINDOW_S = 3600.0  # ... if they were asked for this recently
FETCH_S = 5.0  # one provider's card, connection included
MAX_FOLLOWED = 4096


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

    def held(self, provider: str) -> AgentCard | None:
        """The card held for ``provider`` (expired or not)."""
        return self._cards.get(provider)

    def names(self, ref: str, now: float | None = None) -> bool:
        """Whether a live card serves agent or model ``ref``."""
        now = time.time() if now is None else now
        return any(
            card.expires > now
            and (ref in card.agents or any(m.get("model") == ref for m in card.models))
            for card in self._cards.values()
        )

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


def card_topic(ref: str) -> str:
    """The gossip topic of the group that listing ref ``ref`` falls in."""
    return f"{TOPIC_PREFIX}{hashlib.sha256(ref.encode()).digest()[0]:02x}"


def card_topics(card: AgentCard) -> set[str]:
    """The topics ``card`` belongs on: those of its agents' and models' groups."""
    refs = [*card.agents, *(str(m.get("model", "")) for m in card.models)]
    return {card_topic(ref) for ref in refs}


def provider_key(ref: str) -> str:
    """The DHT key under which providers of an agent or a model are announced (a
    listing's ref names one listing, so agents and models share the prefix)."""
    return f"agent:{ref}"


@dataclass(frozen=True)
class CardRequest(Message):
    """Ask a provider for its current card."""

    TYPE: ClassVar[str] = "card.request"


@dataclass(frozen=True)
class CardResponse(Message):
    """A provider's signed card, or empty bytes when it serves nothing now."""

    TYPE: ClassVar[str] = "card.response"
    card: bytes = field(default=b"", metadata={"max_len": MAX_CARD_BYTES})


CARD = RequestProtocol(
    "/mercato/card/1.0.0",
    CardRequest,
    CardResponse,
    max_request_bytes=256,
    max_response_bytes=MAX_CARD_BYTES + 256,
    timeout_s=FETCH_S,
    rate_per_s=20.0,
)


def card_verdict(cards: CardBook, data: bytes, own_peer: str, topic: str | None = None) -> Verdict:
    """Gossip's verdict on a card: forward what is new and sound, drop the rest
    (blaming the forwarder only for a forged or malformed card, or one on a topic
    it does not belong on: its provider's new card must name something of the
    topic's group, or its held card must, when the provider stopped serving it)."""
    try:
        card = AgentCard.verify(data)
    except CardVersion:
        return Verdict.IGNORE
    except CardRejected:
        return Verdict.REJECT
    if topic is not None and topic not in card_topics(card):
        held = cards.held(card.provider)
        if held is None or topic not in card_topics(held):
            return Verdict.REJECT
    return Verdict.ACCEPT if cards.add(card) or card.provider == own_peer else Verdict.IGNORE


class CardExchange:
    """This node's side of card traffic: the groups it follows, its own card for
    whoever asks, and the first look-up of a ref's providers.

    `find` and `follow` never raise for the network's faults: a DHT that finds
    nobody, or providers that do not answer, leave the book as it was. Cancelled
    look-ups leave no state behind but the topics already joined.
    """

    def __init__(self, overlay: Overlay, book: CardBook) -> None:
        self._overlay = overlay
        self.book = book
        self._topics: set[str] = set()
        self._joining: dict[str, trio.Event] = {}
        self._looked: dict[str, float] = {}  # ref -> when its last look-up began
        self._lookups: dict[str, trio.Event] = {}  # refs looked up now
        self._followed: dict[str, float] = {}  # ref -> when it was last asked for
        self._own = b""
        self._published: set[str] = set()
        self._nursery: trio.Nursery | None = None
        self._refreshing = trio.Semaphore(4)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer card requests and look up again, every REFRESH_S, the refs asked
        for in the last REFRESH_WINDOW_S (new providers, new links), until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._overlay.requests.serve(CARD, self._answer)
            task_status.started()
            while True:
                await trio.sleep(REFRESH_S)
                now = trio.current_time()
                for ref, used in list(self._followed.items()):
                    if now - used < REFRESH_WINDOW_S:
                        await self._refreshing.acquire()  # a few at a time
                        nursery.start_soon(self._refresh, ref)

    async def _refresh(self, ref: str) -> None:
        try:
            await self._lookup(ref)
        finally:
            self._refreshing.release()

    @property
    def topics(self) -> set[str]:
        """The card topics this node has joined."""
        return set(self._topics)

    def follows(self, ref: str) -> bool:
        return ref in self._followed

    def follow(self, ref: str) -> None:
        """Start following ``ref`` in the background (see `find`)."""
        if self._nursery is not None and (ref not in self._followed or not self.book.names(ref)):
            self._note(ref)
            self._nursery.start_soon(self.find, ref, FETCH_S * 2)

    async def find(self, ref: str, timeout_s: float) -> None:
        """Follow ``ref``: join its group's topic and, when no live card names it
        (and it was not looked up in the last LOOKUP_AGAIN_S), fetch the cards of
        the providers the DHT knows for it. Returns within ``timeout_s``."""
        self._note(ref)
        with trio.move_on_after(timeout_s):
            await self._join(card_topic(ref))
            if not self.book.names(ref):
                await self._lookup(ref)

    async def card_of(self, peer: str, addrs: tuple[str, ...] | list[str] = ()) -> AgentCard | None:
        """``peer``'s current card, asked of it directly (and kept in the book);
        None if it serves nothing, cannot be reached or answers with a bad card."""
        host = self._overlay.host
        try:
            with trio.fail_after(FETCH_S):
                if peer not in host.connected_peers():
                    for addr in list(addrs)[:3]:
                        try:
                            await host.connect(addr if "/p2p/" in addr else f"{addr}/p2p/{peer}")
                            break
                        except P2PError:
                            continue
                answer = await self._overlay.requests.request(peer, CARD, CardRequest())
        except (P2PError, trio.TooSlowError) as exc:
            log.debug("no card from a provider", extra={"peer": peer, "why": str(exc)})
            return None
        if not answer.card:
            return None
        try:
            card = AgentCard.verify(answer.card)
        except CardRejected as exc:
            if not isinstance(exc, CardVersion):
                await host.penalize(peer, 25.0, f"sent a bad card: {exc}")
            return None
        if card.provider != peer:
            await host.penalize(peer, 25.0, "sent someone else's card as its own")
            return None
        self.book.add(card)
        return card

    async def publish(self, card: AgentCard, signed: bytes) -> None:
        """Publish this node's own card on its groups' topics (and once more on
        those of its previous card, so that followers learn what it stopped
        serving), joining them first; give it to whoever asks from now on."""
        self._own = signed
        topics = card_topics(card)
        for topic in sorted(topics):
            await self._join(topic)
        for topic in sorted(topics | self._published):
            try:
                await self._overlay.gossip.publish(topic, signed)
            except P2PError as exc:
                log.debug("could not publish the agent card", extra={"why": str(exc)})
        self._published = topics

    async def validate(self, message: GossipMessage) -> Verdict:
        return card_verdict(self.book, message.data, self._overlay.peer_id, message.topic)

    async def _answer(self, peer: str, request: CardRequest) -> CardResponse:
        return CardResponse(card=self._own)

    def _note(self, ref: str) -> None:
        if ref not in self._followed and len(self._followed) >= MAX_FOLLOWED:
            del self._followed[min(self._followed, key=self._followed.__getitem__)]
        self._followed[ref] = trio.current_time()

    async def _join(self, topic: str) -> None:
        if topic in self._topics:
            return
        if topic in self._joining:
            await self._joining[topic].wait()
            return
        self._joining[topic] = done = trio.Event()
        try:
            await self._overlay.gossip.subscribe(topic, _taken, self.validate)
            self._topics.add(topic)
        finally:
            del self._joining[topic]
            done.set()

    async def _lookup(self, ref: str) -> None:
        if ref in self._lookups:
            await self._lookups[ref].wait()
            return
        now = trio.current_time()
        if now - self._looked.get(ref, -math.inf) < LOOKUP_AGAIN_S:
            return
        if len(self._looked) >= MAX_FOLLOWED:  # refs asked for once, long ago
            self._looked = {r: t for r, t in self._looked.items() if now - t < LOOKUP_AGAIN_S}
        self._looked[ref] = now
        self._lookups[ref] = done = trio.Event()
        try:
            try:
                found = await self._overlay.dht.find_providers(provider_key(ref), LOOKUP_PROVIDERS)
            except DhtError as exc:
                log.debug("provider look-up failed", extra={"ref": ref, "why": str(exc)})
                return
            me = self._overlay.peer_id
            async with trio.open_nursery() as nursery:
                for record in found:
                    if record.peer_id != me:
                        nursery.start_soon(self.card_of, record.peer_id, record.addrs)
        finally:
            del self._lookups[ref]
            done.set()


async def _taken(message: GossipMessage) -> None:
    pass  # cards are taken in the validator


class CardForwarder:
    """A relay's part in card gossip: it joins every group's topic, checks cards
    and passes them on, so that peers reached only through it hear each other's;
    it serves nothing itself."""

    def __init__(self, overlay: Overlay) -> None:
        self._overlay = overlay
        self.cards = CardBook()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for group in range(GROUPS):
            topic = f"{TOPIC_PREFIX}{group:02x}"
            await self._overlay.gossip.subscribe(topic, _taken, self._validate)
        task_status.started()
        await trio.sleep_forever()

    async def _validate(self, message: GossipMessage) -> Verdict:
        return card_verdict(self.cards, message.data, self._overlay.peer_id, message.topic)
