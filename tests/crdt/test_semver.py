import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.crdt import Version, VersionError, VersionRange

versions = st.builds(
    Version,
    st.integers(0, 20),
    st.integers(0, 20),
    st.integers(0, 20),
    st.one_of(st.just(()), st.tuples(st.sampled_from(["alpha", "beta", "rc", "1", "2"]))),
)


@given(versions)
def test_versions_round_trip_through_text(v: Version) -> None:
    assert Version.parse(str(v)) == v


def test_precedence_follows_semver() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.1.0",
        "2.0.0",
    ]
    parsed = [Version.parse(t) for t in ordered]
    assert sorted(reversed(parsed)) == parsed


@pytest.mark.parametrize(
    "text", ["1", "1.2", "01.2.3", "1.2.3.4", "v1.2.3", "1.2.3-01", "", "1.2.-1"]
)
def test_malformed_versions_are_refused(text: str) -> None:
    with pytest.raises(VersionError):
        Version.parse(text)


@pytest.mark.parametrize(
    "rng, inside, outside",
    [
        ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0", "2.0.0-rc.1", "1.3.0-beta"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0"]),
        ("1.2.x", ["1.2.0", "1.2.7"], ["1.3.0", "1.1.9"]),
        ("1.x", ["1.0.0", "1.9.9"], ["2.0.0"]),
        ("*", ["0.0.1", "9.9.9"], ["1.0.0-rc.1"]),
        (">=1.0.0 <2.0.0", ["1.0.0", "1.5.0"], ["2.0.0", "0.9.9"]),
        ("^1.0.0 || ^3.0.0", ["1.1.0", "3.2.0"], ["2.0.0"]),
        (">=1.0.0-rc.1 <1.0.1", ["1.0.0-rc.1", "1.0.0-rc.2", "1.0.0"], ["1.0.1", "0.9.0-rc.1"]),
        ("=2.0.0", ["2.0.0"], ["2.0.1"]),
    ],
)
def test_ranges_match_what_they_say(rng: str, inside: list[str], outside: list[str]) -> None:
    parsed = VersionRange.parse(rng)
    for text in inside:
        assert parsed.matches(Version.parse(text)), (rng, text)
    for text in outside:
        assert not parsed.matches(Version.parse(text)), (rng, text)


def test_best_picks_the_highest_match() -> None:
    found = [Version.parse(t) for t in ["1.0.0", "1.4.2", "2.0.0", "1.5.0-rc.1"]]
    assert VersionRange.parse("^1.0.0").best(found) == Version.parse("1.4.2")
    assert VersionRange.parse("^3.0.0").best(found) is None


@pytest.mark.parametrize("text", ["", "   ", "^", ">=", "1.x.3", "^x.1", "abc", "||", "1.2.3 ||"])
def test_malformed_ranges_are_refused(text: str) -> None:
    with pytest.raises(VersionError):
        VersionRange.parse(text)
