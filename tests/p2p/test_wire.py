import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.p2p._wire import (
    FrameError,
    FrameReader,
    FrameTooLarge,
    decode_body,
    encode_frame,
    encode_uvarint,
)

plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


class Chunked:
    """A byte source that hands out at most ``step`` bytes per read, like a real stream."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    async def read(self, n: int) -> bytes:
        take = min(n, self.step)
        out, self.data = self.data[:take], self.data[take:]
        return out


async def read_all(data: bytes, step: int, max_bytes: int = 1 << 20) -> list:
    reader, out = FrameReader(Chunked(data, step)), []
    while True:
        try:
            out.append(await reader.read(max_bytes))
        except EOFError:
            return out


@given(st.lists(plain, max_size=5), st.integers(1, 7))
async def test_frames_round_trip_across_any_read_boundaries(values, step) -> None:
    data = b"".join(encode_frame(v, 1 << 20) for v in values)
    assert await read_all(data, step) == values


@given(plain)
async def test_a_truncated_frame_is_an_error_not_a_value(value) -> None:
    frame = encode_frame(value, 1 << 20)
    for cut in range(1, len(frame)):
        with pytest.raises(FrameError):
            await read_all(frame[:cut], 3)


async def test_an_oversized_frame_is_refused_before_its_body_is_read() -> None:
    class Counting(Chunked):
        read_bytes = 0

        async def read(self, n: int) -> bytes:
            out = await super().read(n)
            Counting.read_bytes += len(out)
            return out

    huge = encode_uvarint(10**9)  # declares 1 GB, sends nothing more
    with pytest.raises(FrameTooLarge):
        await FrameReader(Counting(huge + b"x" * 100, 1000)).read(1024)
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 2000, 1024)


@pytest.mark.parametrize(
    "body, why",
    [
        (bytes.fromhex("c11a514b67b0"), "tag"),  # datetime tag
        (bytes.fromhex("a2616101616102"), "duplicate"),  # {"a":1,"a":2}
        (bytes.fromhex("1817"), "canonical"),  # 23 encoded in two bytes
        (bytes.fromhex("0000"), "trailing"),  # 0 followed by garbage
        (bytes.fromhex("9f01ff"), "indefinite"),  # indefinite-length array
        (bytes.fromhex("a10101"), "keys"),  # {1: 1}
        (b"\x81" * 40 + b"\x00", "nesting"),
        (b"\xff\xfe", "garbage"),
    ],
)
def test_strict_decoding_refuses_what_a_peer_could_abuse(body: bytes, why: str) -> None:
    with pytest.raises(FrameError):
        decode_body(body)


async def test_bad_length_prefixes() -> None:
    with pytest.raises(FrameError, match="too long"):
        await FrameReader(Chunked(b"\xff" * 6, 10)).read(1 << 30)
    with pytest.raises(FrameError, match="minimally"):
        await FrameReader(Chunked(b"\x81\x00", 10)).read(1 << 30)


def test_nesting_is_bounded_to_the_last_level() -> None:
    from mercato.p2p._wire import MAX_DEPTH

    ok, too_deep = 0, 0
    for _ in range(MAX_DEPTH):
        ok = [ok]
    for _ in range(MAX_DEPTH + 1):
        too_deep = [too_deep]
    assert decode_body(encode_frame(ok, 1024)[1:]) == ok
    with pytest.raises(FrameError, match="nesting"):
        encode_frame(too_deep, 1024)
    assert decode_body(encode_frame([[]] * 3, 1024)[1:]) == [[]] * 3
