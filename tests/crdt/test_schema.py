import contextlib
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mercato.crdt import SchemaError
from mercato.crdt._schema import validate_listing, validate_release

MANIFEST = """
name = "wordcount"
kind = "agent"
title = "Word count"
summary = "Counts words, lines and bytes of a text."
tags = ["text", "utility"]
capabilities = ["text.stats"]
price = 1000
royalty_bps = 500
license = "MIT"
links = ["https://example.org/wordcount"]

[limits]
memory_mb = 32
"""
PUBLISHER = "8Co4tt4sbELaV8uRcbz31ojp8QdazK5MxczX8j1d5EoB"


def manifest(**changes: object) -> dict:
    data = tomllib.loads(MANIFEST)
    data.update(changes)
    return data


def test_a_manifest_parses_and_round_trips() -> None:
    listing = validate_listing(manifest())
    assert listing.limits["memory_mb"] == 32 and listing.limits["timeout_s"] == 10
    assert validate_listing(listing.to_wire()) == listing


@pytest.mark.parametrize(
    "changes, field, why",
    [
        ({"name": "Word Count"}, "name", "lowercase"),
        ({"kind": "robot"}, "kind", "agent, model"),
        ({"title": ""}, "title", "1 to 120"),
        ({"price": -5}, "price", "between 0"),
        ({"price": 1.5}, "price", "whole number"),
        ({"price": True}, "price", "whole number"),
        ({"royalty_bps": 10_001}, "royalty_bps", "10000"),
        ({"tags": ["ok", "Not Ok"]}, "tags[1]", "slugs"),
        ({"tags": ["a", "a"]}, "tags", "duplicate"),
        ({"links": ["ftp://x"]}, "links[0]", "http"),
        ({"limits": {"memory_mb": 99999}}, "limits.memory_mb", "4096"),
        ({"limits": {"cpu": 1}}, "limits.cpu", "not a limit"),
        ({"colour": "red"}, "colour", "not a listing field"),
        ({"deprecated": "yes"}, "deprecated", "true or false"),
    ],
)
def test_each_wrong_field_is_named_with_the_reason(changes: dict, field: str, why: str) -> None:
    with pytest.raises(SchemaError) as err:
        validate_listing(manifest(**changes))
    assert err.value.field == field
    assert why in str(err.value)


def test_a_missing_field_is_named() -> None:
    data = manifest()
    del data["summary"]
    with pytest.raises(SchemaError, match="'summary': is required"):
        validate_listing(data)


@given(
    st.dictionaries(
        st.text(max_size=12), st.one_of(st.none(), st.integers(), st.text(max_size=20)), max_size=8
    )
)
def test_arbitrary_input_is_a_schema_error_never_a_crash(data: dict) -> None:
    with contextlib.suppress(SchemaError):
        validate_listing(data)


def test_releases_validate_versions_builds_and_dependencies() -> None:
    release = validate_release(
        {
            "name": "wordcount",
            "version": "1.2.0",
            "cid": "b3-abcdef0123456789",
            "size": 1234,
            "dependencies": {f"{PUBLISHER}/tokenizer": "^2.0.0"},
        }
    )
    assert release.key == "wordcount@1.2.0"
    bad = [
        ({"version": "1.2"}, "version"),
        ({"size": 0}, "size"),
        ({"cid": "x"}, "cid"),
        ({"dependencies": {"nobody/tokenizer": "^2.0.0"}}, "dependencies.nobody/tokenizer"),
        (
            {"dependencies": {f"{PUBLISHER}/tokenizer": "^^2"}},
            f"dependencies.{PUBLISHER}/tokenizer",
        ),
    ]
    base = {"name": "wordcount", "version": "1.2.0", "cid": "b3-abcdef0123456789", "size": 1234}
    for changes, field in bad:
        with pytest.raises(SchemaError) as err:
            validate_release({**base, **changes})
        assert err.value.field == field, changes
