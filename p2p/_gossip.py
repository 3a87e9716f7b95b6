"""GossipSub for the project's topics: validated, bounded, rate-limited, drained.

py-libp2p 0.8.1's GossipSub is configured deliberately here (each default was
measured on loopback and found unfit for a live registry):

- its spam limit (10 messages/s per *neighbour* per topic, excess dropped and
  the neighbour penalised, own publishes included) cut a 50 msg/s stream to
  20 % delivery: it is off, and replaced by a per-*origin* token bucket in the
  validator, which never penalises a relay for what it forwards;
- the heartbeat is 1 s, not 120 s, and the "adaptive" logic that rewrites it to
  60 s after 30 s is off;
- subscription queues hold 1024 messages, not 32, and each subscription is
  drained by its own task so that it never fills; the per-peer outbound queue
  (32 RPCs, which dropped most of a burst of 100 publishes) holds 1024;
- validators there return only true or false, and one that raises crashes the
  Pubsub service: here a topic validator returns a `Verdict` (accept, ignore:
  drop without blame, reject: drop and penalise the forwarder) and an exception
  in it counts as ignore;
- messages are bounded by ``max_message_bytes`` at publish and on receipt;
- the protocol is GossipSub v1.1: v1.2 sends an IDONTWANT control message for
  every message received, and with it one hop carried 1 KB messages at 1000/s
  with a 2.2 s median delay instead of 79 ms (IDONTWANT pays off only for
  messages far larger than ours);
- a message is offered to peers outside the mesh for 5 heartbeats, not 3, so
  that a node in a mesh the message missed still hears of it on a loaded
  machine;
- a node backs off from the peers its heartbeat prunes, as the spec asks of
  both sides: py-libp2p's does not, so it re-grafted them within a heartbeat
  or two, they penalised it for a GRAFT flood (about 19 times in the first 8 s
  of a 20-node network), and a node penalised enough stopped getting gossip;
- a node whose mesh is full (``degree_high``) refuses further GRAFTs with a
  PRUNE instead of taking them and pruning at its next heartbeat: in a network
  where every node reaches every other (as a small one does once the DHT join
  has run), taking them made meshes overshoot and oscillate for tens of seconds.

Messages are signed by the publishing node's libp2p key (strict signing);
``origin`` is that node's peer id. Content that needs an author's signature
(a registry entry, a card) carries its own inside ``data``.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from ._errors import P2PError
from ._host import P2PHost
from ._trio_util import TokenBucket, prune_buckets, single_error

log = logging.getLogger("mercato.p2p.gossip")

PENALTY_REJECTED = 10.0
MAX_PENDING_PER_PEER = 512
"""Messages from one peer awaiting validation at once; py-libp2p starts a task per
message of an RPC (at a cost that grows with the number of tasks), so one RPC
of 20,000 tiny messages would stall the node for a minute."""
RPC_OVERHEAD_BYTES = 64 * 1024
PENALTY_FLOOD = 2.0  # per message over the origin's rate, when the origin sends it itself
PENALTY_GATED = 10.0  # per message of a peer scored below py-libp2p's publish threshold


class Verdict(enum.Enum):
    ACCEPT = "accept"
    IGNORE = "ignore"  # drop, do not forward, no blame (duplicates, stale, rate)
    REJECT = "reject"  # drop, do not forward, penalise the forwarder (invalid)


class GossipError(P2PError):
    """A message could not be published."""


@dataclass(frozen=True)
class GossipConfig:
    heartbeat_s: float = 1.0
    degree: int = 6
    degree_low: int = 4
    degree_high: int = 8
    """Not py-libp2p's 12: every message goes to each mesh peer, so a message's cost
    grows with the mesh, and where nodes reach many peers (a small network, once
    the DHT join has run) meshes fill up to this bound. In a 20-node network
    where each node held 16-19 connections the median mesh was 9-10 at 12 and 6
    at 8, and the CPU per message fell by 30 %."""
    gossip_window: int = 5
    """Heartbeats a message is offered (IHAVE) to peers outside the mesh: a node
    whose mesh missed it has this many chances to hear of it."""
    max_message_bytes: int = 256 * 1024
    subscription_queue: int = 1024
    outbound_queue: int = 1024
    origin_rate_per_s: float = 2000.0
    """Messages per second each origin may publish on a topic before the excess is
    ignored (and, from the origin itself, penalised). Far above what the project
    sends (registry batches, card heartbeats), below what floods a node."""
    origin_burst: float = 4000.0


@dataclass(frozen=True)
class GossipMessage:
    topic: str
    data: bytes
    origin: str
    """Peer id of the node that published it."""
    forwarder: str
    """Peer id of the neighbour that passed it to us."""


TopicValidator = Callable[[GossipMessage], Awaitable[Verdict]]
MessageHandler = Callable[[GossipMessage], Awaitable[None]]


MAX_TOPICS_PER_PEER = 512  # a peer's subscriptions this node keeps books on


@dataclass
class TopicStatistics:
    published: int = 0
    delivered: int = 0
    accepted: int = 0
    ignored: int = 0
    rejected: int = 0


class _Ignored(Exception):
    """Raised through py-libp2p's validation to drop a message without blame."""


def _make_router_class() -> type:
    from libp2p.pubsub.gossipsub import GossipSub

    class _BackoffGossipSub(GossipSub):
        """GossipSub whose heartbeat backs off from the peers it prunes, as the
        spec says both sides must. py-libp2p 0.8 does not, so a node re-grafted a
        peer that had just been pruned, that peer took it for a GRAFT flood and
        penalised it, and under load a penalised node stopped receiving gossip."""

        def mesh_heartbeat(self) -> Any:
            to_graft, to_prune = super().mesh_heartbeat()
            for peer, topics in to_prune.items():
                for topic in topics:
                    self._add_back_off(peer, topic, False)
            return to_graft, to_prune

        async def handle_graft(self, graft_msg: Any, sender_peer_id: Any) -> None:
            """Refuse a GRAFT (PRUNE, with backoff on both sides) when the mesh of its
            topic already holds ``degree_high`` peers. py-libp2p accepts every GRAFT
            and prunes the excess at its next heartbeat; where every node is
            connected to every other, each joining node's GRAFTs pushed meshes to
            15 and more, the heartbeats pruned them back to ``degree``, the pruned
            fell below ``degree_low`` and grafted again: hundreds of GRAFTs and
            PRUNEs in a 20-node network, still going 30 s after it started."""
            topic = graft_msg.topicID
            mesh = self.mesh.get(topic)
            if mesh is not None and sender_peer_id not in mesh and len(mesh) >= self.degree_high:
                self._add_back_off(sender_peer_id, topic, False)
                await self.emit_prune(topic, sender_peer_id, False, False)
                return
            await super().handle_graft(graft_msg, sender_peer_id)

    return _BackoffGossipSub


def _make_pubsub_class() -> type:
    from libp2p.exceptions import ValidationError
    from libp2p.pubsub.pubsub import Pubsub

    class _VerdictPubsub(Pubsub):
        """Pubsub with accept / ignore / reject validation, and guards against peers
        that would crash it or stall it (see the module docstring)."""

        gossip: Gossip

        async def validate_msg(self, msg_forwarder: Any, msg: Any) -> None:
            verdict = await self.gossip._validate(msg_forwarder, msg)
            if verdict is Verdict.IGNORE:
                raise _Ignored
            if verdict is Verdict.REJECT:
                raise ValidationError("rejected by the topic validator")
            await super().validate_msg(msg_forwarder, msg)

        async def push_msg(self, msg_forwarder: Any, msg: Any) -> None:
            if await self._gated(msg_forwarder, msg):
                return
            # One copy of a message at a time: a peer repeating a message in one RPC
            # must not get it validated and delivered once per copy.
            message_id = bytes(msg.from_id) + bytes(msg.seqno)
            if message_id in self.gossip._in_flight:
                return
            self.gossip._in_flight.add(message_id)
            try:
                await super().push_msg(msg_forwarder, msg)
            except _Ignored:
                pass
            except Exception as exc:
                await self.gossip._blame(str(msg_forwarder), f"malformed message: {exc!r}")
            finally:
                self.gossip._in_flight.discard(message_id)

        async def _gated(self, msg_forwarder: Any, msg: Any) -> bool:
            """True if py-libp2p's score gate will drop this message unseen. A peer
            scored that low got there by sending invalid messages; what the gate
            drops, no validator sees, so it is counted here (else the flooder's
            penalties would stop short of a ban and decay)."""
            scorer = getattr(self.router, "scorer", None)
            forwarder = str(msg_forwarder)
            if scorer is None or forwarder == self.gossip._host.peer_id:
                return False
            if self._is_msg_seen(msg) or scorer.allow_publish(msg_forwarder, list(msg.topicIDs)):
                return False
            await self.gossip._host.penalize(
                forwarder, PENALTY_GATED, "gossip from a peer below the score gate"
            )
            return True

    return _VerdictPubsub


class Gossip:
    """Publish and subscribe on GossipSub topics of one host."""

    def __init__(self, host: P2PHost, config: GossipConfig, pubsub: Any, router: Any) -> None:
        self._host = host
        self._config = config
        self._pubsub = pubsub
        self._router = router
        self._validators: dict[str, TopicValidator] = {}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self._stats: dict[str, TopicStatistics] = {}
        self._subscribed: set[str] = set()
        self._in_flight: set[bytes] = set()
        self._pending: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None

    def statistics(self) -> dict[str, TopicStatistics]:
        return dict(self._stats)

    def mesh_peers(self, topic: str) -> list[str]:
        return sorted(str(p) for p in self._router.mesh.get(topic, ()))

    def graft_flood_penalties(self) -> dict[str, float]:
        """Peers this node penalised for re-grafting too soon after a prune (decaying);
        honest peers never should be."""
        scorer = self._router.scorer
        found = scorer.graft_flood_penalties if scorer is not None else {}
        return {str(p): v for p, v in found.items() if v > 0}

    def topic_peers(self, topic: str) -> list[str]:
        return sorted(str(p) for p in self._pubsub.peer_topics.get(topic, ()))

    async def wait_for_mesh(self, peer_id: str, topic: str) -> None:
        from libp2p.peer.id import ID

        await self._pubsub.wait_for_mesh(ID.from_base58(peer_id), topic)

    async def subscribe(
        self, topic: str, handler: MessageHandler, validator: TopicValidator | None = None
    ) -> None:
        """Deliver every accepted message on ``topic`` from other nodes to ``handler``.

        ``validator`` runs first, on every message (own publishes included). The
        handler runs in this service's task, one message at a time: keep it short
        or hand work off. A handler that raises is logged; delivery continues.
        """
        assert self._nursery is not None, "gossip is not running"
        if validator is not None:
            self._validators[topic] = validator
        self._subscribed.add(topic)
        self._stats.setdefault(topic, TopicStatistics())
        subscription = await self._pubsub.subscribe(topic)
        self._nursery.start_soon(self._drain, topic, subscription, handler)

    @property
    def max_message_bytes(self) -> int:
        """The largest message `publish` accepts."""
        return self._config.max_message_bytes

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data``; GossipError if it is larger than max_message_bytes."""
        if len(data) > self._config.max_message_bytes:
            raise GossipError(
                f"message of {len(data)} bytes exceeds the gossip bound of "
                f"{self._config.max_message_bytes}"
            )
        await self._pubsub.publish(topic, data)
        self._stats.setdefault(topic, TopicStatistics()).published += 1

    async def _drain(self, topic: str, subscription: Any, handler: MessageHandler) -> None:
        own = self._host.peer_id
        async for raw in subscription:
            message = _to_message(topic, raw, forwarder="")
            if message.origin == own:
                continue
            self._stats[topic].delivered += 1
            try:
                await handler(message)
            except Exception:
                log.exception("gossip handler failed", extra={"topic": topic})

    async def _validate(self, forwarder: Any, raw: Any) -> Verdict:
        # Our messages name exactly one topic, one we subscribe to; anything else is
        # a peer making us keep books on topics of its choosing.
        topics = list(raw.topicIDs)
        own = str(forwarder) == self._host.peer_id
        if len(topics) != 1 or not (own or topics[0] in self._subscribed):
            for topic in set(topics) & self._subscribed:
                self._stats[topic].rejected += 1
            if not own:
                await self._blame(str(forwarder), f"message for topics {topics[:3]}")
            return Verdict.REJECT
        topic = topics[0]
        message = _to_message(topic, raw, forwarder=str(forwarder))
        verdict = await self._validate_one(message)
        stats = self._stats.setdefault(topic, TopicStatistics())
        if verdict is Verdict.ACCEPT:
            stats.accepted += 1
        elif verdict is Verdict.IGNORE:
            stats.ignored += 1
        else:
            stats.rejected += 1
            if message.forwarder != self._host.peer_id:
                await self._blame(message.forwarder, f"rejected on {topic}")
        return verdict

    async def _blame(self, peer: str, reason: str) -> None:
        await self._host.penalize(peer, PENALTY_REJECTED, f"gossip: {reason}")

    def _admit(self, peer: str) -> bool:
        """Whether another message from ``peer`` may be queued for validation."""
        pending = self._pending.get(peer, 0)
        if pending >= MAX_PENDING_PER_PEER:
            return False
        self._pending[peer] = pending + 1
        return True

    def _done(self, peer: str) -> None:
        left = self._pending.get(peer, 1) - 1
        if left > 0:
            self._pending[peer] = left
        else:
            self._pending.pop(peer, None)

    async def _validate_one(self, message: GossipMessage) -> Verdict:
        if self._host.is_banned(message.forwarder):
            return Verdict.IGNORE
        if len(message.data) > self._config.max_message_bytes:
            return Verdict.REJECT
        if message.origin != self._host.peer_id:
            prune_buckets(self._buckets)
            key = (message.topic, message.origin)
            bucket = self._buckets.setdefault(key, TokenBucket(self._config.origin_burst))
            if not bucket.take(self._config.origin_rate_per_s, self._config.origin_burst):
                if message.forwarder == message.origin:  # the flooder itself, not a relay
                    await self._host.penalize(
                        message.origin, PENALTY_FLOOD, f"flood on {message.topic}"
                    )
                return Verdict.IGNORE
        validator = self._validators.get(message.topic)
        if validator is None:
            return Verdict.ACCEPT
        try:
            return await validator(message)
        except Exception:
            log.exception("gossip validator failed", extra={"topic": message.topic})
            return Verdict.IGNORE


def _to_message(topic: str, raw: Any, forwarder: str) -> GossipMessage:
    from libp2p.peer.id import ID

    try:
        origin = str(ID(raw.from_id))
    except Exception:
        origin = ""
    return GossipMessage(topic, bytes(raw.data), origin, forwarder)


def _bound_pending(pubsub: Any, gossip: Gossip) -> None:
    """Cap the messages from one peer that py-libp2p queues for validation.

    py-libp2p spawns ``push_msg`` for every message of an incoming RPC through
    its service manager; the wrapper below drops (and blames) the excess.
    """
    manager = pubsub.manager
    spawn = manager.run_task

    def run_task(fn: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(fn, "__func__", None) is not type(pubsub).push_msg or not args:
            return spawn(fn, *args, **kwargs)
        peer = str(args[0])
        if not gossip._admit(peer):
            assert gossip._nursery is not None, "gossip is not running"
            gossip._nursery.start_soon(gossip._blame, peer, "too many messages at once")
            return None

        async def counted(*a: Any) -> None:
            try:
                await fn(*a)
            finally:
                gossip._done(peer)

        return spawn(counted, *args, **kwargs)

    manager.run_task = run_task


@asynccontextmanager
async def open_gossip(host: P2PHost, config: GossipConfig) -> AsyncIterator[Gossip]:
    """Run GossipSub on ``host`` for the life of the block; stops it cleanly on exit."""
    from libp2p.pubsub import pubsub as pubsub_module
    from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11
    from libp2p.pubsub.rpc_queue import RpcQueue
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams
    from libp2p.tools.anyio_service import background_trio_service

    # py-libp2p reads both queue sizes from its module globals: the subscription
    # queue when subscribing, the per-peer outbound queue (a default argument,
    # so the class reference itself is replaced) when a peer joins. The class
    # becomes a partial, which its declared type does not allow: patched untyped.
    pubsub_module.SUBSCRIPTION_CHANNEL_SIZE = config.subscription_queue
    patched: Any = pubsub_module
    patched.RpcQueue = functools.partial(RpcQueue, max_size=config.outbound_queue)
    router = _make_router_class()(
        protocols=[PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=config.degree,
        degree_low=config.degree_low,
        degree_high=config.degree_high,
        heartbeat_interval=config.heartbeat_s,
        gossip_window=config.gossip_window,
        gossip_history=config.gossip_window + 1,
        spam_protection_enabled=False,
        adaptive_gossip_enabled=False,
        score_params=ScoreParams(
            p4_invalid_messages=TopicScoreParams(weight=10.0, cap=100.0, decay=0.99),
            p5_behavior_penalty_weight=1.0,
            p5_behavior_penalty_decay=0.99,
            publish_threshold=-50.0,
            gossip_threshold=-100.0,
            graylist_threshold=-200.0,
        ),
    )
    pubsub = _make_pubsub_class()(
        host.libp2p,
        router,
        max_inbound_rpc_size=config.max_message_bytes + RPC_OVERHEAD_BYTES,
        # A relay joins all 256 card groups besides the registry's topic; py-libp2p
        # would ignore a peer's subscriptions past 100 (and never route to it).
        max_subscriptions_per_peer=MAX_TOPICS_PER_PEER,
    )
    gossip = Gossip(host, config, pubsub, router)
    pubsub.gossip = gossip
    with single_error():
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(background_trio_service(pubsub))
            await stack.enter_async_context(background_trio_service(router))
            await pubsub.wait_until_ready()
            stack.callback(pubsub.seen_messages.stop)  # else its sweeper thread outlives us
            _bound_pending(pubsub, gossip)
            async with trio.open_nursery() as nursery:
                gossip._nursery = nursery
                try:
                    yield gossip
                finally:
                    nursery.cancel_scope.cancel()
