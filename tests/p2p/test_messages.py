from dataclasses import dataclass, field
from typing import ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.p2p import InfoResponse, Message, MessageError
from mercato.p2p._wire import decode_body, encode_body


@dataclass(frozen=True)
class Sample(Message):
    TYPE: ClassVar[str] = "sample"
    name: str = field(metadata={"max_len": 8})
    count: int = field(metadata={"min": 0, "max": 100})
    blob: bytes = b""
    tags: list[str] = field(default_factory=list, metadata={"max_len": 3, "item_max_len": 4})
    note: str | None = None


GOOD = {
    "t": "sample",
    "v": 1,
    "name": "ok",
    "count": 3,
    "blob": b"\x00",
    "tags": ["a"],
    "note": None,
}


@given(
    st.builds(
        InfoResponse,
        agent=st.text(max_size=128),
        listen_addrs=st.lists(st.text(max_size=256), max_size=32),
        roles=st.lists(st.text(max_size=32), max_size=16),
    )
)
def test_messages_round_trip_through_the_wire(message: InfoResponse) -> None:
    assert InfoResponse.from_wire(decode_body(encode_body(message.to_wire(), 1 << 20))) == message


def test_a_valid_message_parses() -> None:
    assert Sample.from_wire(GOOD) == Sample("ok", 3, b"\x00", ["a"], None)


@pytest.mark.parametrize(
    "change, field_name",
    [
        ({"t": "other"}, "sample"),
        ({"v": 2}, "version"),
        ({"extra": 1}, "extra"),
        ({"name": 5}, "sample.name"),
        ({"name": "x" * 9}, "sample.name"),
        ({"count": True}, "sample.count"),
        ({"count": 101}, "sample.count"),
        ({"count": -1}, "sample.count"),
        ({"blob": "text"}, "sample.blob"),
        ({"tags": ["a", "b", "c", "d"]}, "sample.tags"),
        ({"tags": ["toolong"]}, "sample.tags[0]"),
        ({"tags": [1]}, "sample.tags[0]"),
        ({"note": 3}, "sample.note"),
    ],
)
def test_each_wrong_field_is_named(change: dict, field_name: str) -> None:
    with pytest.raises(MessageError, match=field_name.replace("[", r"\[").replace("]", r"\]")):
        Sample.from_wire({**GOOD, **change})


def test_a_missing_required_field_is_named() -> None:
    bad = dict(GOOD)
    del bad["count"]
    with pytest.raises(MessageError, match="missing field 'count'"):
        Sample.from_wire(bad)
    with pytest.raises(MessageError, match="expected a map"):
        Sample.from_wire([1, 2])
