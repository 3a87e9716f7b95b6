"""The listing and release schema: what may enter a publisher's feed.

A creator writes a listing in ``MANIFEST.toml``::

    name = "wordcount"              # slug: lowercase letters, digits, '-'
    kind = "agent"                  # agent | model
    title = "Word count"
    summary = "Counts words, lines and bytes of a text."
    description = "..."             # optional, up to 20,000 characters
    tags = ["text", "utility"]
    capabilities = ["text.stats"]
    price = 1000                    # lamports per task
    royalty_bps = 500               # creator's share of each payment, 0-10000
    license = "MIT"
    links = ["https://example.org/wordcount"]

    [plans.pro]                     # optional: sell licences or subscriptions
    kind = "licence"                # licence (once) | subscription (per period)
    price = 50_000_000              # lamports to the creator, once or per period
    versions = "^1"                 # the releases it covers (default "*")
    period_days = 30                # subscription: the length of one period
    run_price = 1000                # per run on top, for the provider (default: price)
    refund_days = 14                # refunds within this many days (default 0: none)
    transferable = false            # the licence token may change hands (default no)

    [limits]                        # what one run may use
    fuel = 1_000_000_000
    memory_mb = 64
    timeout_s = 10
    max_input_bytes = 1048576
    max_output_bytes = 1048576
    max_subcalls = 16               # calls out (agents, models) one run may make
    max_depth = 2                   # levels of sub-calls below a run

A listing with plans runs only for holders of a licence or subscription of
one of them, at the plan's ``run_price`` per run.

A listing of ``kind = "model"`` describes a model that providers serve through
an inference engine, in a ``[model]`` table, and is priced per 1,000 tokens
(``price`` is then 0 or left out, and it has no plans)::

    [model]
    family = "llama"                # 1-32 letters, digits, '.', '_', '-'
    parameters = 1_200_000          # 1 to 10**13
    quantisation = "F16"            # 1-16 letters, digits, '_'
    context_length = 4096           # tokens, 1 to 10**7
    weights = "sha256:<64 hex>"     # optional: the weights' content hash
    input_price = 100               # lamports per 1,000 input (prompt) tokens
    output_price = 300              # lamports per 1,000 output (completion) tokens

A release binds ``name@version`` to a build: a content id and a size, plus
optional dependencies on other listings (``"publisher/name" = "^1.2.0"``). A
release of a model may name no build (``cid = ""`` and ``size = 0``, or both
left out): `FeedWriter` refuses that for an agent's release.

`validate_listing` and `validate_release` accept a plain mapping (from TOML, the
control API or a decoded feed entry) and return the typed value, or raise
`SchemaError` naming the first field that is wrong and why. The canonical form
of either (`to_wire`) is what a feed stores, as canonical CBOR.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ._errors import SchemaError, VersionError
from ._semver import Version, VersionRange

KINDS = ("agent", "model")
PLAN_KINDS = ("licence", "subscription")
MAX_PLANS = 8
MAX_PRICE = 10**15  # lamports; stays exact wherever numbers become doubles
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_CAPABILITY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LICENSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+() -]{0,63}")
_LINK = re.compile(r"https?://[^\s]{1,240}")
_CID = re.compile(r"[A-Za-z0-9:_-]{8,128}")
_PLAN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_PUBLISHER = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}")
_FAMILY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}")
_QUANTISATION = re.compile(r"[A-Za-z0-9_]{1,16}")
_WEIGHTS = re.compile(r"sha256:[0-9a-f]{64}")
MAX_PARAMETERS = 10**13
MAX_CONTEXT_LENGTH = 10**7
# Control characters (C0 but newline and tab, DEL, C1) and the bidirectional
# overrides: stored, they would reach every peer's terminal and move its cursor,
# recolour it or reorder what it shows.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAK = re.compile(r"[\n\t]")
# Either of the two: one search instead of two for single-line text that is clean.
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
LIMIT_BOUNDS = {
    "fuel": (1, 10**13),
    "memory_mb": (1, 4096),
    "timeout_s": (1, 3600),
    "max_input_bytes": (1, 64 * 1024 * 1024),
    "max_output_bytes": (1, 64 * 1024 * 1024),
    "max_subcalls": (0, 64),  # host calls (agents, models) one run may make
    "max_depth": (0, 8),  # levels of sub-calls below a run
}
# Only present when the creator sets them, so listings that do not keep their bytes.
SUBCALL_LIMITS = {"max_subcalls": 16, "max_depth": 2}
DEFAULT_LIMITS = {
    "fuel": 1_000_000_000,
    "memory_mb": 64,
    "timeout_s": 10,
    "max_input_bytes": 1024 * 1024,
    "max_output_bytes": 1024 * 1024,
}


@dataclass(frozen=True)
class Plan:
    """A way to buy a listing other than per run: a licence token on the ledger."""

    kind: str  # licence | subscription
    price: int  # lamports to the creator, once (licence) or per period (subscription)
    versions: str = "*"
    period_days: int = 0  # subscription only
    run_price: int = 0  # per run on top of the plan, for the provider
    refund_days: int = 0
    transferable: bool = False

    @property
    def period_s(self) -> int:
        return self.period_days * 86_400

    def covers(self, version: str) -> bool:
        """Whether this plan's version range holds ``version``."""
        return VersionRange.parse(self.versions).matches(Version.parse(version))


@dataclass(frozen=True)
class ModelSpec:
    """What a model listing describes (its ``[model]`` table): the model, and its
    prices per 1,000 tokens."""

    family: str  # e.g. llama, qwen2
    parameters: int
    quantisation: str  # e.g. F16, Q4_K_M
    context_length: int  # tokens
    input_price: int  # lamports per 1,000 input (prompt) tokens
    output_price: int  # lamports per 1,000 output (completion) tokens
    weights: str = ""  # "sha256:<64 hex>", or "" where not known


@dataclass(frozen=True)
class Listing:
    name: str
    kind: str
    title: str
    summary: str
    price: int
    royalty_bps: int
    description: str = ""
    tags: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    license: str = ""
    links: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    deprecated: bool = False
    plans: dict[str, Plan] = field(default_factory=dict)
    model: ModelSpec | None = None  # kind "model" only

    def to_wire(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.plans:  # listings without plans keep the form they always had
            del out["plans"]
        if self.model is None:  # and so do listings that are not models
            del out["model"]
        for key in ("tags", "capabilities", "links"):
            out[key] = list(out[key])
        return out


@dataclass(frozen=True)
class Release:
    name: str
    version: str
    cid: str
    size: int
    dependencies: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def has_build(self) -> bool:
        """False for a model's release that names no build (cid "", size 0)."""
        return bool(self.cid)

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


def _is_mapping(value: Any) -> bool:
    # A decoded entry's tables are dicts: skip the ABC check, slow next to the rest.
    return type(value) is dict or isinstance(value, Mapping)


_LISTING_FIELDS = frozenset(Listing.__dataclass_fields__)
_MODELSPEC_FIELDS = frozenset(ModelSpec.__dataclass_fields__)
_PLAN_FIELDS = frozenset(Plan.__dataclass_fields__)
_RELEASE_FIELDS = frozenset(Release.__dataclass_fields__)


def _text(
    obj: Mapping[str, Any],
    key: str,
    low: int,
    high: int,
    pattern: re.Pattern | None = None,
    default: str | None = None,
    hint: str = "",
    multiline: bool = False,
) -> str:
    value = obj.get(key, default)
    if value is None:
        raise SchemaError(key, "is required")
    if not isinstance(value, str):
        raise SchemaError(key, f"must be text, got {type(value).__name__}")
    if not low <= len(value) <= high:
        raise SchemaError(key, f"must be {low} to {high} characters long, got {len(value)}")
    if multiline:
        bad = _CONTROL.search(value)
    elif _CONTROL_OR_BREAK.search(value) is None:
        bad = None
    else:  # report what the two searches would, in their order
        bad = _CONTROL.search(value) or _LINE_BREAK.search(value)
    if bad:
        where = f"at character {bad.start() + 1}"
        raise SchemaError(key, f"holds a control character ({bad.group()!r}, {where}); remove it")
    if pattern is not None and value and not pattern.fullmatch(value):
        raise SchemaError(key, f"{value[:40]!r} is not allowed: {hint}")
    return value


def _whole(obj: Mapping[str, Any], key: str, low: int, high: int, unit: str = "") -> int:
    value = obj.get(key)
    if value is None:
        raise SchemaError(key, "is required")
    if type(value) is not int:
        raise SchemaError(key, f"must be a whole number{unit}, got {value!r}")
    if not low <= value <= high:
        raise SchemaError(key, f"must be between {low} and {high}{unit}, got {value}")
    return value


def _items(
    obj: Mapping[str, Any], key: str, most: int, pattern: re.Pattern, hint: str
) -> tuple[str, ...]:
    value = obj.get(key, [])
    if not isinstance(value, list | tuple):
        raise SchemaError(key, "must be a list of text")
    if len(value) > most:
        raise SchemaError(key, f"may hold at most {most} entries, got {len(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not pattern.fullmatch(item):
            raise SchemaError(f"{key}[{i}]", f"{str(item)[:40]!r} is not allowed: {hint}")
    if len(set(value)) != len(value):
        raise SchemaError(key, "has duplicate entries")
    return tuple(value)


def _limits(obj: Mapping[str, Any]) -> dict[str, int]:
    value = obj.get("limits", {})
    if not _is_mapping(value):
        raise SchemaError("limits", "must be a table of fuel, memory_mb, timeout_s, ...")
    unknown = set(value) - set(LIMIT_BOUNDS)
    if unknown:
        raise SchemaError(
            f"limits.{sorted(unknown)[0]}", f"is not a limit; known: {', '.join(LIMIT_BOUNDS)}"
        )
    merged = {**DEFAULT_LIMITS, **value}
    for key, (low, high) in LIMIT_BOUNDS.items():
        if key not in merged:
            continue
        v = merged[key]
        if type(v) is not int or not low <= v <= high:
            raise SchemaError(
                f"limits.{key}", f"must be a whole number between {low} and {high}, got {v!r}"
            )
    return merged


def _no_unknown(obj: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    if allowed.issuperset(obj):
        return
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise SchemaError(
            unknown[0], f"is not a {what} field; known fields: {', '.join(sorted(allowed))}"
        )


def validate_listing(obj: Any) -> Listing:
    """A `Listing` from a mapping; SchemaError names the first wrong field."""
    if not _is_mapping(obj):
        raise SchemaError("listing", "must be a table of fields")
    _no_unknown(obj, _LISTING_FIELDS, "listing")
    kind = _text(obj, "kind", 1, 16)
    if kind not in KINDS:
        raise SchemaError("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    deprecated = obj.get("deprecated", False)
    if type(deprecated) is not bool:
        raise SchemaError("deprecated", "must be true or false")
    name = _text(obj, "name", 1, 64, _SLUG, hint="use lowercase letters, digits and '-'")
    title, summary = _text(obj, "title", 1, 120), _text(obj, "summary", 1, 280)
    model = _model_of(obj, kind)
    price = _whole(
        {"price": obj.get("price", 0 if model else None)}, "price", 0, MAX_PRICE, " lamports"
    )
    if model is not None and price != 0:
        raise SchemaError(
            "price",
            f"must be 0 for a model, got {price}: a model is priced per 1,000 tokens: "
            "set [model] input_price and output_price",
        )
    if model is not None and obj.get("plans"):
        raise SchemaError(
            "plans",
            "a model is not sold by plan yet, only per 1,000 tokens: remove the [plans] tables",
        )
    return Listing(
        name=name,
        kind=kind,
        title=title,
        summary=summary,
        price=price,
        royalty_bps=_whole(obj, "royalty_bps", 0, 10_000, " basis points"),
        description=_text(obj, "description", 0, 20_000, default="", multiline=True),
        tags=_items(obj, "tags", 16, _SLUG, "tags are lowercase slugs"),
        capabilities=_items(obj, "capabilities", 32, _CAPABILITY, "like text.stats or image-gen"),
        license=_text(obj, "license", 0, 64, _LICENSE, default="", hint="an SPDX id such as MIT"),
        links=_items(obj, "links", 8, _LINK, "links are http(s) URLs"),
        limits=_limits(obj),
        deprecated=deprecated,
        plans=_plans(obj, price),
        model=model,
    )


def _model_of(obj: Mapping[str, Any], kind: str) -> ModelSpec | None:
    """The listing's ``[model]`` table: required for a model, refused for an agent."""
    value = obj.get("model")
    if kind != "model":
        if value is not None:
            raise SchemaError(
                "model",
                f'is for model listings: this one is kind = "{kind}"; remove the [model] '
                'table, or set kind = "model"',
            )
        return None
    if value is None:
        raise SchemaError(
            "model",
            "is required for a model listing: add a [model] table with family, parameters, "
            "quantisation, context_length, input_price and output_price",
        )
    return _model(value)


def _model(obj: Any) -> ModelSpec:
    if not _is_mapping(obj):
        raise SchemaError(
            "model", "must be a table: family, parameters, quantisation, context_length, ..."
        )
    try:
        _no_unknown(obj, _MODELSPEC_FIELDS, "model")
        family_hint = "letters, digits, '.', '_' and '-', like llama"
        quantisation_hint = "letters, digits and '_', like F16 or Q4_K_M"
        weights_hint = 'the weights\' hash: "sha256:" and 64 lowercase hex digits'
        per_1k = " lamports per 1,000 tokens"
        return ModelSpec(
            family=_text(obj, "family", 1, 32, _FAMILY, hint=family_hint),
            parameters=_whole(obj, "parameters", 1, MAX_PARAMETERS, " parameters"),
            quantisation=_text(obj, "quantisation", 1, 16, _QUANTISATION, hint=quantisation_hint),
            context_length=_whole(obj, "context_length", 1, MAX_CONTEXT_LENGTH, " tokens"),
            input_price=_whole(obj, "input_price", 0, MAX_PRICE, per_1k),
            output_price=_whole(obj, "output_price", 0, MAX_PRICE, per_1k),
            weights=_text(obj, "weights", 0, 71, _WEIGHTS, default="", hint=weights_hint),
        )
    except SchemaError as exc:
        raise SchemaError(f"model.{exc.field}", exc.why) from exc


def _plans(obj: Mapping[str, Any], run_price: int) -> dict[str, Plan]:
    value = obj.get("plans", {})
    if not _is_mapping(value):
        raise SchemaError("plans", "must be a table of plans, like [plans.pro]")
    if len(value) > MAX_PLANS:
        raise SchemaError("plans", f"may hold at most {MAX_PLANS} plans, got {len(value)}")
    plans = {}
    for name, plan in value.items():
        if not isinstance(name, str) or not _PLAN.fullmatch(name):
            raise SchemaError(
                f"plans.{str(name)[:40]}", "a plan's name is a slug of up to 32 characters"
            )
        plans[name] = _plan(f"plans.{name}", plan, run_price)
    return plans


def _plan(where: str, obj: Any, run_price: int) -> Plan:
    if not _is_mapping(obj):
        raise SchemaError(where, "must be a table: kind, price, versions, ...")
    try:
        _no_unknown(obj, _PLAN_FIELDS, "plan")
        kind = _text(obj, "kind", 1, 16)
        if kind not in PLAN_KINDS:
            raise SchemaError("kind", f"must be one of {', '.join(PLAN_KINDS)}, got {kind!r}")
        versions = _text(obj, "versions", 1, 32, default="*")
        try:
            VersionRange.parse(versions)
        except VersionError as exc:
            raise SchemaError("versions", str(exc)) from exc
        low_period = 1 if kind == "subscription" else 0
        period = obj.get("period_days", 0 if kind == "licence" else None)
        if period is None:
            raise SchemaError("period_days", "is required for a subscription (days, 1-3660)")
        if kind == "licence" and period not in (0, None):
            raise SchemaError("period_days", "is for subscriptions; a licence does not expire")
        transferable = obj.get("transferable", False)
        if type(transferable) is not bool:
            raise SchemaError("transferable", "must be true or false")
        return Plan(
            kind=kind,
            price=_whole(obj, "price", 0, MAX_PRICE, " lamports"),
            versions=versions,
            period_days=_whole({"period_days": period}, "period_days", low_period, 3660, " days"),
            run_price=_whole(
                {"run_price": obj.get("run_price", run_price)},
                "run_price",
                0,
                MAX_PRICE,
                " lamports",
            ),
            refund_days=_whole(
                {"refund_days": obj.get("refund_days", 0)}, "refund_days", 0, 365, " days"
            ),
            transferable=transferable,
        )
    except SchemaError as exc:
        raise SchemaError(f"{where}.{exc.field}", exc.why) from exc


def validate_release(obj: Any) -> Release:
    """A `Release` from a mapping; SchemaError names the first wrong field."""
    if not _is_mapping(obj):
        raise SchemaError("release", "must be a table of fields")
    _no_unknown(obj, _RELEASE_FIELDS, "release")
    version = _text(obj, "version", 5, 64)
    try:
        Version.parse(version)
    except VersionError as exc:
        raise SchemaError("version", str(exc)) from exc
    deps = obj.get("dependencies", {})
    if not _is_mapping(deps) or len(deps) > 32:
        raise SchemaError(
            "dependencies", "must be a table of at most 32 'publisher/name' = 'range'"
        )
    for ref, rng in deps.items():
        publisher, _, name = str(ref).partition("/")
        if not _PUBLISHER.fullmatch(publisher) or not _SLUG.fullmatch(name):
            raise SchemaError(
                f"dependencies.{str(ref)[:60]}", "must name a listing as 'publisher/name'"
            )
        try:
            VersionRange.parse(rng)
        except VersionError as exc:
            raise SchemaError(f"dependencies.{ref}", str(exc)) from exc
    name = _text(obj, "name", 1, 64, _SLUG, hint="use lowercase letters, digits and '-'")
    cid, size = _build_of(obj)
    return Release(name=name, version=version, cid=cid, size=size, dependencies=dict(deps))


def _build_of(obj: Mapping[str, Any]) -> tuple[str, int]:
    """A release's build, as (cid, size); ("", 0) for none (a model's release)."""
    size = _whole(obj, "size", 0, 2**40, " bytes") if obj.get("size") is not None else None
    if obj.get("cid") in (None, ""):
        if size in (None, 0):
            return "", 0  # no build: only a model's release may have none (FeedWriter checks)
        raise SchemaError(
            "cid",
            f"is empty while size is {size}: give the build's content id, or leave out "
            "both cid and size for a release with no build (models only)",
        )
    cid = _text(obj, "cid", 8, 128, _CID, hint="a build content id")
    if size is None:
        raise SchemaError("size", "is required with a cid: the build's size in bytes")
    if size == 0:
        raise SchemaError(
            "size",
            "is 0 while cid names a build: give the build's size in bytes (a release with "
            "no build leaves out both cid and size)",
        )
    return cid, size
