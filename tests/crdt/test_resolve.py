"""Dependency resolution: newest that fits, backtracking, and conflicts that say why."""

import pytest

from mercato.crdt import (
    DependencyConflict,
    ListingNotFound,
    VersionError,
    resolve,
    validate_release,
)

A, B, C = ("A" * 32 + "/a", "B" * 32 + "/b", "C" * 32 + "/c")


def graph(spec: dict[str, dict[str, dict[str, str]]]):
    """{ref: {version: {dep ref: range}}} as a releases_of function."""

    def releases_of(ref: str):
        if ref not in spec:
            return None
        name = ref.split("/")[1]
        return [
            validate_release(
                {"name": name, "version": v, "cid": "b3-" + "d" * 20, "size": 1, "dependencies": d}
            )
            for v, d in spec[ref].items()
        ]

    return releases_of


def versions(resolution) -> dict[str, str]:
    return {ref: r.version for ref, r in resolution.plan.items()}


def test_the_newest_release_in_range_wins_with_its_dependencies() -> None:
    releases = graph(
        {
            A: {"1.0.0": {B: "^1.0.0"}, "1.4.0": {B: "^1.2.0"}, "2.0.0": {}},
            B: {"1.1.0": {}, "1.3.0": {}, "2.0.0": {}},
        }
    )
    found = resolve(releases, A, "^1.0.0")
    assert found.candidates == ["1.4.0", "1.0.0"]
    assert versions(found) == {A: "1.4.0", B: "1.3.0"}
    assert versions(resolve(releases, A)) == {A: "2.0.0"}


def test_a_conflict_backtracks_to_an_older_release() -> None:
    releases = graph(
        {
            A: {"1.0.0": {B: "^1.0.0", C: "^1.0.0"}, "1.1.0": {B: "^2.0.0", C: "^1.0.0"}},
            B: {"1.0.0": {}, "2.0.0": {}},
            C: {"1.0.0": {B: "^1.0.0"}},
        }
    )
    assert versions(resolve(releases, A, "^1.0.0")) == {A: "1.0.0", B: "1.0.0", C: "1.0.0"}


def test_an_unsatisfiable_graph_names_the_listing_and_the_ranges() -> None:
    releases = graph(
        {
            A: {"1.0.0": {B: "^2.0.0", C: "^1.0.0"}},
            B: {"1.0.0": {}, "2.0.0": {}},
            C: {"1.0.0": {B: "^1.0.0"}},
        }
    )
    with pytest.raises(DependencyConflict) as err:
        resolve(releases, A, "*")
    message = str(err.value)
    assert B in message and "^2.0.0" in message and "^1.0.0" in message
    assert f"{C}@1.0.0" in message


@pytest.mark.parametrize(
    "spec, wanted, why",
    [
        ({A: {"1.0.0": {}}}, "^2.0.0", "no release of"),
        ({A: {"1.0.0": {B: "*"}}}, "*", "does not know it"),
        ({A: {"1.0.0": {A: "^2.0.0"}}}, "*", "excludes itself"),
    ],
)
def test_what_cannot_resolve_says_why(spec, wanted, why) -> None:
    with pytest.raises(DependencyConflict, match=why):
        resolve(graph(spec), A, wanted)


def test_an_unknown_listing_is_not_found() -> None:
    with pytest.raises(ListingNotFound):
        resolve(graph({}), A)


def test_a_bad_range_is_a_version_error() -> None:
    with pytest.raises(VersionError):
        resolve(graph({A: {"1.0.0": {}}}), A, "not a range")


def test_a_cycle_resolves_and_a_tangle_is_bounded() -> None:
    assert versions(resolve(graph({A: {"1.0.0": {B: "*"}}, B: {"1.0.0": {A: "*"}}}), A)) == {
        A: "1.0.0",
        B: "1.0.0",
    }
    # Many versions of two listings that never agree: the search gives up, bounded.
    many = {f"1.{i}.0": {B: f"=2.{i}.1"} for i in range(200)}
    tangle = graph({A: many, B: {f"2.{i}.0": {} for i in range(200)}})
    with pytest.raises(DependencyConflict):
        resolve(tangle, A)


def test_deep_and_wide_graphs_end_in_an_answer_not_a_crash() -> None:
    from mercato.p2p import Keypair

    refs = [f"{Keypair.generate().address}/l{i}" for i in range(60)]
    chain = {
        ref: {
            "1.0.0": {refs[j]: "*" for j in range(max(0, i - 31), i)}
            | ({refs[i + 1]: "*"} if i + 1 < 60 else {})
        }
        for i, ref in enumerate(refs)
    }
    found = resolve(graph(chain), refs[0])
    assert set(found.plan) == set(refs)
    # Many releases whose ranges never match: the search gives up, and says so.
    many = {
        A: {f"1.{i}.0": {B: "=9.9.9"} for i in range(3000)},
        B: {f"2.{i}.0": {} for i in range(3000)},
    }
    with pytest.raises(DependencyConflict, match="gave up"):
        resolve(graph(many), A)
