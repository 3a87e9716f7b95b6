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


MODEL_MANIFEST = """
name = "tiny-chat"
kind = "model"
title = "Tiny chat"
summary = "A tiny test model"
royalty_bps = 500
license = "MIT"

[model]
family = "llama"
parameters = 1_200_000
quantisation = "F16"
context_length = 4096
weights = "sha256:{WEIGHTS}"
input_price = 100
output_price = 300
""".replace("{WEIGHTS}", "ab" * 32)


def model_manifest(**model: object) -> dict:
    data = tomllib.loads(MODEL_MANIFEST)
    data["model"].update(model)
    return data


def test_a_model_listing_parses_and_round_trips() -> None:
    from mercato.crdt import ModelSpec

    listing = validate_listing(tomllib.loads(MODEL_MANIFEST))
    assert listing.price == 0 and listing.plans == {}
    assert listing.model == ModelSpec(
        family="llama",
        parameters=1_200_000,
        quantisation="F16",
        context_length=4096,
        input_price=100,
        output_price=300,
        weights="sha256:" + "ab" * 32,
    )
    wire = listing.to_wire()
    assert wire["model"] == {
        "family": "llama",
        "parameters": 1_200_000,
        "quantisation": "F16",
        "context_length": 4096,
        "input_price": 100,
        "output_price": 300,
        "weights": "sha256:" + "ab" * 32,
    }
    assert validate_listing(wire) == listing
    no_weights = model_manifest()
    del no_weights["model"]["weights"]
    assert validate_listing(no_weights).model.weights == ""  # type: ignore[union-attr]
    assert validate_listing({**no_weights, "price": 0}).price == 0


@pytest.mark.parametrize(
    "model, field, why",
    [
        ({"family": ""}, "model.family", "1 to 32"),
        ({"family": "llama 3"}, "model.family", "letters, digits"),
        ({"family": "x" * 33}, "model.family", "1 to 32"),
        ({"parameters": 0}, "model.parameters", "between 1 and 10000000000000"),
        ({"parameters": 10**13 + 1}, "model.parameters", "between 1"),
        ({"parameters": 1.5e9}, "model.parameters", "whole number"),
        ({"quantisation": "Q4-K"}, "model.quantisation", "like F16 or Q4_K_M"),
        ({"quantisation": "Q" * 17}, "model.quantisation", "1 to 16"),
        ({"context_length": 0}, "model.context_length", "between 1 and 10000000 tokens"),
        ({"context_length": 10**7 + 1}, "model.context_length", "tokens"),
        ({"weights": "sha256:" + "AB" * 32}, "model.weights", "64 lowercase hex"),
        ({"weights": "md5:abc"}, "model.weights", "sha256:"),
        ({"input_price": -1}, "model.input_price", "lamports per 1,000 tokens"),
        ({"output_price": 10**15 + 1}, "model.output_price", "lamports per 1,000 tokens"),
        ({"output_price": True}, "model.output_price", "whole number"),
        ({"colour": "red"}, "model.colour", "not a model field"),
    ],
)
def test_each_wrong_model_field_is_named_with_the_reason(model: dict, field: str, why: str) -> None:
    with pytest.raises(SchemaError) as err:
        validate_listing(model_manifest(**model))
    assert err.value.field == field
    assert why in str(err.value)


def test_a_missing_model_field_is_named() -> None:
    data = model_manifest()
    del data["model"]["context_length"]
    with pytest.raises(SchemaError, match=r"'model\.context_length': is required"):
        validate_listing(data)


@pytest.mark.parametrize(
    "data, field, why",
    [
        ({**tomllib.loads(MODEL_MANIFEST), "model": None}, "model", "add a [model] table"),
        ({**tomllib.loads(MODEL_MANIFEST), "model": "llama"}, "model", "must be a table"),
        (manifest(model=tomllib.loads(MODEL_MANIFEST)["model"]), "model", 'set kind = "model"'),
        ({**tomllib.loads(MODEL_MANIFEST), "price": 5}, "price", "set [model] input_price and"),
        ({**tomllib.loads(MODEL_MANIFEST), "price": -5}, "price", "between 0"),
        (
            {**tomllib.loads(MODEL_MANIFEST), "plans": {"pro": {"kind": "licence", "price": 9}}},
            "plans",
            "not sold by plan yet",
        ),
    ],
)
def test_a_model_table_goes_with_kind_model_and_per_token_prices(
    data: dict, field: str, why: str
) -> None:
    if data.get("model") is None and data["kind"] == "model":
        del data["model"]
    with pytest.raises(SchemaError) as err:
        validate_listing(data)
    assert err.value.field == field
    assert why in str(err.value)


def test_listings_without_a_model_keep_their_wire_form_byte_for_byte() -> None:
    """Digests of the canonical CBOR the schema wrote before models had a [model]
    table: old feeds, their signatures and content hashes stay as they were."""
    import hashlib

    from mercato.p2p import canonical_cbor

    def digest(value: object) -> str:
        return hashlib.sha256(canonical_cbor(value.to_wire())).hexdigest()  # type: ignore[attr-defined]

    plain = validate_listing(manifest())
    assert "model" not in plain.to_wire() and plain.model is None
    assert digest(plain) == "f5d343fdd7e8edfd502d57b5e1047666e059b12749ca78ff5a93c5fafd18702b"
    with_plans = validate_listing(manifest(plans={"pro": {"kind": "licence", "price": 5}}))
    assert digest(with_plans) == "d674844fb2c2765d64ccf0557df7104ca265f963ad0cd6ff7258689eedab76c2"
    release = validate_release(
        {"name": "wordcount", "version": "1.2.0", "cid": "b3-abcdef0123456789", "size": 1234}
    )
    assert digest(release) == "7f5c32135a7ee7e01d19a884a996e42c263c77c52f3f98de5a5c6b819f27eef5"


def test_a_release_may_name_no_build_only_as_cid_empty_and_size_zero_together() -> None:
    base = {"name": "tiny-chat", "version": "1.0.0"}
    for bare in (base, {**base, "cid": "", "size": 0}):
        release = validate_release(bare)
        assert (release.cid, release.size, release.has_build) == ("", 0, False)
        assert release.to_wire()["cid"] == "" and validate_release(release.to_wire()) == release
    assert validate_release({**base, "cid": "b3-abcdef0123456789", "size": 5}).has_build
    bad = [
        ({"cid": "", "size": 5}, "cid", "leave out both cid and size"),
        ({"size": 5}, "cid", "leave out both cid and size"),
        ({"cid": "b3-abcdef0123456789"}, "size", "is required"),
        ({"cid": "b3-abcdef0123456789", "size": 0}, "size", "give the build's size"),
        ({"cid": None, "size": False}, "size", "whole number"),
        ({"cid": 5, "size": 0}, "cid", "must be text"),
    ]
    for changes, field, why in bad:
        with pytest.raises(SchemaError) as err:
            validate_release({**base, **changes})
        assert err.value.field == field, changes
        assert why in str(err.value), changes
