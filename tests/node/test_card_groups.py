"""Cards travel on the topic of their agent's group: a node hears the cards of
what it serves or follows, and finds the rest through the DHT and the
providers themselves."""

import time
from pathlib import Path

import pytest

from mercato.node.tasks._cards import AgentCard, CardBook, card_topic, card_verdict
from mercato.p2p import Keypair, Verdict

from ..conftest import budget
from .test_registry_network import running_nodes
from .test_tasks import EXAMPLES, LISTING, until

FAST = {"heartbeat_s": 0.3, "card_ttl_s": 5.0}


def card_traffic(node) -> dict[str, int]:
    """Card messages this node took in, per card topic."""
    stats = node.overlay.gossip.statistics()
    return {
        topic: s.accepted + s.ignored + s.rejected + s.delivered
        for topic, s in stats.items()
        if topic.startswith("mercato/cards/")
    }


async def serve(provider, name: str) -> str:
    """``provider`` publishes, releases and serves wordcount as ``name``."""
    listing = {**LISTING, "name": name}
    publisher = (await provider.registry.publish("default", listing))["publisher"]
    wasm = EXAMPLES / "wordcount" / "wordcount.wasm"
    cid = (await provider.builds.add_file(wasm)).cid
    release = {"name": name, "version": "1.0.0", "cid": cid, "size": wasm.stat().st_size}
    await provider.registry.release("default", release)
    agent = f"{publisher}/{name}"
    provider.tasks.serve_agents((*provider.tasks.serving, agent))
    return agent


def other_group_name(publisher: str, taken: str) -> str:
    """A listing name whose ref falls in another group than ``taken``."""
    for i in range(1000):
        if card_topic(f"{publisher}/other{i}") != card_topic(taken):
            return f"other{i}"
    raise AssertionError("no name in another group")


@pytest.mark.slow
async def test_a_node_hears_only_the_cards_of_what_it_follows(tmp_path: Path) -> None:
    async with running_nodes(tmp_path, 4, serve=FAST) as (provider, other, user, bystander):
        nodes = (provider, other, user, bystander)
        for i, a in enumerate(nodes):  # everyone is everyone's neighbour
            for b in nodes[i + 1 :]:
                await a.overlay.host.connect(b.overlay.host.listen_addrs()[0])
        followed = await serve(provider, "wc")
        publisher = followed.partition("/")[0]
        unfollowed = await serve(other, other_group_name(publisher, followed))

        async def user_has_the_card() -> bool:
            shown = await user.registry.show(publisher, "wc")
            return bool(shown and shown["releases"] and user.tasks.providers(followed))

        await until(user_has_the_card, budget(30), "the followed agent's card at the user")
        assert user.tasks.exchange.topics == {card_topic(followed)}

        # A window of several heartbeats in which the followed agent's cards keep
        # reaching the user, and the other agent's are published all along.
        heard = card_traffic(user).get(card_topic(followed), 0)
        published = other.overlay.gossip.statistics()[card_topic(unfollowed)].published

        async def window_passed() -> bool:
            stats = other.overlay.gossip.statistics()[card_topic(unfollowed)]
            return (
                card_traffic(user).get(card_topic(followed), 0) >= heard + 3
                and stats.published >= published + 3
            )

        await until(window_passed, budget(30), "three more cards of each provider")
        assert card_traffic(bystander) == {}, "a node that follows nothing heard cards"
        assert bystander.tasks.exchange.topics == set()
        assert card_topic(unfollowed) not in card_traffic(user)
        assert other.overlay.peer_id not in {c["provider"] for c in user.tasks.providers(followed)}
        assert user.tasks.cards.held(other.overlay.peer_id) is None

        # Asked for the other agent, the bystander finds its provider at once: the
        # DHT names it, and its card comes from the provider itself.
        found = await bystander.tasks.find_providers(unfollowed)
        assert [c["provider"] for c in found] == [other.overlay.peer_id]
        assert bystander.tasks.exchange.topics == {card_topic(unfollowed)}
        # From now on its cards come by gossip.
        before = card_traffic(bystander).get(card_topic(unfollowed), 0)

        async def gossiped() -> bool:
            return card_traffic(bystander).get(card_topic(unfollowed), 0) > before

        await until(gossiped, budget(30), "the next card on the group's topic")


@pytest.mark.slow
async def test_a_provider_that_answers_with_someone_elses_card_is_not_believed(
    tmp_path: Path,
) -> None:
    async with running_nodes(tmp_path, 2, serve=FAST) as (liar, user):
        await user.overlay.host.connect(liar.overlay.host.listen_addrs()[0])
        someone = Keypair.generate()
        card = AgentCard(
            provider=someone.peer_id, seq=1, expires=time.time() + 60, agents=["a/b"],
            prices=[0],
        )  # fmt: skip
        liar.tasks.exchange._own = card.sign(someone)  # what it answers when asked
        assert await user.tasks.exchange.card_of(liar.overlay.peer_id) is None
        assert user.tasks.cards.held(someone.peer_id) is None
        assert user.overlay.host._conduct[liar.overlay.peer_id].points > 0  # penalised
        liar.tasks.exchange._own = b""  # serves nothing: no card, no blame
        assert await user.tasks.exchange.card_of(liar.overlay.peer_id) is None


def test_a_card_belongs_on_its_agents_topics_or_on_those_it_stopped_serving() -> None:
    key = Keypair.generate()
    book = CardBook()

    def card(seq: int, agents: list[str]) -> bytes:
        return AgentCard(
            provider=key.peer_id, seq=seq, expires=time.time() + 60, agents=agents,
            prices=[0] * len(agents),
        ).sign(key)  # fmt: skip

    here = card_topic("a/b")
    elsewhere = next(card_topic(f"a/{i}") for i in range(999) if card_topic(f"a/{i}") != here)
    assert card_verdict(book, card(1, ["a/b"]), "me", elsewhere) is Verdict.REJECT
    assert book.held(key.peer_id) is None
    assert card_verdict(book, card(2, ["a/b"]), "me", here) is Verdict.ACCEPT
    # It stops serving a/b: the news goes out on a/b's topic once, and is taken.
    assert card_verdict(book, card(3, []), "me", here) is Verdict.ACCEPT
    assert book.candidates("a/b") == []
    assert card_verdict(book, card(4, []), "me", here) is Verdict.REJECT


def test_card_topics_are_groups_of_refs() -> None:
    topics = {card_topic(f"pub/agent{i}") for i in range(5000)}
    assert len(topics) == 256
    assert all(t.startswith("mercato/cards/2/") and len(t) == 18 for t in topics)
