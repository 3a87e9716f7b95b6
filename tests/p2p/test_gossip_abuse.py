"""A peer speaking raw GossipSub at us must not crash, stall or bloat the node."""

import time
from contextlib import suppress

import pytest
import trio

from mercato.p2p import Verdict

from .conftest import wait_until

pytestmark = pytest.mark.slow
TOPIC = "mercato/test/1"


def frame(rpc) -> bytes:
    from libp2p.utils.varint import encode_uvarint

    body = rpc.SerializeToString()
    return encode_uvarint(len(body)) + body


async def raw_pubsub_stream(attacker, victim):
    from libp2p.peer.id import ID
    from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

    return await attacker.host.libp2p.new_stream(ID.from_base58(victim.peer_id), [PROTOCOL_ID_V11])


def publish_rpc(*messages):
    from libp2p.pubsub.pb import rpc_pb2

    return rpc_pb2.RPC(publish=[rpc_pb2.Message(**m) for m in messages])


async def still_serving(victim, good) -> None:
    with trio.fail_after(5):
        info = await good.info(victim.peer_id)
    assert info.agent == "mercato"
    assert victim.gossip._pubsub.manager.is_running


async def test_garbage_and_malformed_messages_do_not_crash_pubsub(open_overlays) -> None:
    async with open_overlays(3) as (victim, attacker, good):
        await victim.gossip.subscribe(TOPIC, _nothing)
        attacks = [
            b"\x05\xff\xff\xff\xff\xff",  # not protobuf
            frame(publish_rpc({"data": b"x", "topicIDs": [TOPIC], "from_id": b"", "seqno": b"1"})),
            frame(
                publish_rpc(  # a key that is not a key
                    {
                        "data": b"x",
                        "topicIDs": [TOPIC],
                        "from_id": b"\x12\x20" + b"\x01" * 32,
                        "seqno": b"1",
                        "key": b"zz",
                        "signature": b"s",
                    }
                )
            ),
        ]
        sent = 0
        for attack in attacks:
            # The victim may have dropped the attacker after the last one: dial again.
            await attacker.host.connect(victim.host.listen_addrs()[0])
            stream = await raw_pubsub_stream(attacker, victim)
            await stream.write(attack)  # an attack that cannot be sent fails the test
            sent += 1
            await still_serving(victim, good)
        assert sent == len(attacks)


async def test_a_huge_rpc_is_refused_without_stalling_the_node(open_overlays) -> None:
    async with open_overlays(3) as (victim, attacker, good):
        await victim.gossip.subscribe(TOPIC, _nothing)
        many = [
            {"data": b"", "topicIDs": [TOPIC], "seqno": i.to_bytes(8, "big")} for i in range(20000)
        ]
        stream = await raw_pubsub_stream(attacker, victim)
        started = time.monotonic()
        with suppress(Exception):
            await stream.write(frame(publish_rpc(*many)))
        await still_serving(victim, good)
        assert time.monotonic() - started < 5


async def test_messages_for_foreign_topics_are_rejected_and_not_booked(open_overlays) -> None:
    async with open_overlays(2) as (victim, attacker):
        await victim.gossip.subscribe(TOPIC, _nothing)
        await attacker.gossip.subscribe(TOPIC, _nothing)
        await attacker.gossip.wait_for_mesh(victim.peer_id, TOPIC)
        junk = [f"junk/{i}" for i in range(300)]

        async def accept_anything(forwarder, raw) -> Verdict:
            return Verdict.ACCEPT  # a malicious peer skips its own checks

        attacker.gossip._validate = accept_anything
        await attacker.gossip._pubsub.publish([TOPIC, *junk], b"hello")
        await wait_until(lambda: victim.gossip.statistics()[TOPIC].rejected > 0, 5, "a rejection")
        assert set(victim.gossip.statistics()) == {TOPIC}
        assert victim.gossip.statistics()[TOPIC].delivered == 0


async def test_a_message_repeated_in_one_rpc_is_delivered_once(open_overlays) -> None:
    async with open_overlays(2) as (victim, sender):
        got: list[bytes] = []
        calls = 0

        async def handler(message) -> None:
            got.append(message.data)

        async def validator(message) -> Verdict:
            nonlocal calls
            calls += 1
            await trio.sleep(0.05)  # a slow validator: copies would overlap
            return Verdict.ACCEPT

        await victim.gossip.subscribe(TOPIC, handler, validator)
        await sender.gossip.subscribe(TOPIC, _nothing)
        await sender.gossip.wait_for_mesh(victim.peer_id, TOPIC)
        await sender.gossip.publish(TOPIC, b"once")
        await wait_until(lambda: bool(got), 5, "the first delivery")
        # Replay the exact message five times in one RPC.
        from libp2p.pubsub.pb import rpc_pb2

        cache = sender.gossip._router.mcache
        original = next(iter(cache.msgs.values()))
        stream = await raw_pubsub_stream(sender, victim)
        await stream.write(frame(rpc_pb2.RPC(publish=[original] * 5)))
        await trio.sleep(0.5)  # nothing to wait for: the point is that nothing more arrives
        assert got == [b"once"]
        assert calls <= 2  # the first copy, at most one overlapping duplicate before seen


async def _nothing(message) -> None:
    pass


async def test_a_peer_that_keeps_sending_invalid_gossip_is_banned(open_overlays) -> None:
    """Its first invalid messages are rejected by the validator; once py-libp2p's
    score gate drops the rest unseen, those count too, until the ban."""
    async with open_overlays(3) as (victim, attacker, good):

        async def refuse_bad(message) -> Verdict:
            return Verdict.REJECT if message.data.startswith(b"bad") else Verdict.ACCEPT

        await victim.gossip.subscribe(TOPIC, _nothing, refuse_bad)
        await attacker.gossip.subscribe(TOPIC, _nothing)
        await attacker.gossip.wait_for_mesh(victim.peer_id, TOPIC)

        async def accept_anything(forwarder, raw) -> Verdict:
            return Verdict.ACCEPT  # a malicious peer skips its own checks

        attacker.gossip._validate = accept_anything
        sent = 0
        with trio.move_on_after(30):
            while not victim.host.is_banned(attacker.peer_id):
                await attacker.gossip._pubsub.publish([TOPIC], b"bad %d" % sent)
                sent += 1
                await trio.sleep(0.02)  # paced, so no origin rate limit is what bans it
        assert victim.host.is_banned(attacker.peer_id), f"not banned after {sent} messages"
        assert victim.gossip.statistics()[TOPIC].rejected >= 1
        assert not victim.host.is_banned(good.peer_id)
        await still_serving(victim, good)
