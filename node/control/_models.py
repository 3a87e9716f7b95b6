"""The control API's bodies: every request and response is one of these models.

Requests refuse unknown fields and wrong types (400, naming the field).
Responses describe what the routes return; where the content belongs to
another part (a listing's fields, the overlay's status), the model says so and
carries it as an object. FastAPI builds the OpenAPI document from these, so the
document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_PATH_CHARS = 4096
MAX_PEER_CHARS = 512
IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]{1,128}$"


class Request(BaseModel):
    """A request body: unknown fields are refused, types are checked strictly."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    """A response body."""

    model_config = ConfigDict(extra="forbid")


class OpenResponse(BaseModel):
    """A response whose fields beyond those listed belong to another part."""

    model_config = ConfigDict(extra="allow")


# -- errors ------------------------------------------------------------------


class ErrorDetail(Response):
    code: str = Field(description="machine-readable, e.g. bad_body, no_such_key")
    message: str = Field(description="what went wrong and what to do, for a person")


class ErrorBody(Response):
    error: ErrorDetail


# -- node --------------------------------------------------------------------


class Health(Response):
    status: Literal["ok"]
    version: str
    instance: str = Field(description="random per daemon run: tells a stale api.json")


class NodeInfo(Response):
    version: str
    name: str
    role: str
    peer_id: str
    instance: str
    api: str
    uptime_s: float


class EventCount(Response):
    count: int
    head: str | None


class Status(Response):
    version: str
    name: str
    role: str
    pid: int
    data_dir: str
    started_at: float
    uptime_s: float
    peer_id: str
    accounts: list[str]
    api: str
    services: list[str]
    events: EventCount
    p2p: dict[str, Any] | None = Field(description="the overlay: addresses, peers, reachability")
    warnings: list[str]


class Stopping(Response):
    status: Literal["stopping"]


class KeyName(Request):
    name: str = Field(max_length=64, description="an account name: a-z, 0-9, _ and -")


class Key(Response):
    name: str
    kind: Literal["node", "account"]
    public_key: str = Field(description="hex")
    address: str = Field(description="base58 (a Solana address)")
    peer_id: str | None
    path: str


class Keys(Response):
    keys: list[Key]


class Event(Response):
    seq: int
    ts: str
    kind: str
    data: dict[str, Any]
    prev_hash: str
    hash: str


class Events(Response):
    events: list[Event]
    next: int = Field(description="pass as `after` for the next page")


class EventsCheck(Response):
    ok: bool
    checked: int
    head: str | None
    first_bad: int | None = None
    reason: str | None = None


class UiLogin(Response):
    url: str = Field(description="open it in a browser; it works once")
    expires_in_s: int


class PeerArg(Request):
    peer: str = Field(
        min_length=1,
        max_length=MAX_PEER_CHARS,
        description="a peer id, or a multiaddr /ip4/HOST/tcp/PORT/p2p/PEER_ID",
    )


class Peer(Response):
    peer_id: str
    addrs: list[str]
    protocols: list[str]


class Peers(Response):
    peers: list[Peer]
    banned: list[str]


class Connected(Response):
    peer_id: str


class Pong(Response):
    peer_id: str
    rtt_ms: list[float]


# -- registry ----------------------------------------------------------------


class PublishBody(Request):
    account: str = Field("default", max_length=64)
    listing: dict[str, Any] = Field(description="the listing's fields (see the README)")


class ReleaseBody(Request):
    account: str = Field("default", max_length=64)
    release: dict[str, Any] = Field(
        description="name, version, dependencies, and cid/size (none, with no build: "
        "a model's release only)"
    )
    build: str | None = Field(
        None,
        max_length=MAX_PATH_CHARS,
        description="the absolute path of a build file: stored, spread to its peers, bound",
    )


class ReleaseOutcome(Response):
    """What a release did: the version bound, its build, and who holds the build."""

    publisher: str
    name: str
    version: str
    cid: str = Field(description='the build bound; "" for a model\'s release with none')
    size: int = Field(description="the build's size in bytes (0 with none)")
    copies: int | None = Field(
        description="nodes shown to hold the build, this one included; null when the "
        "build was given by cid (stored elsewhere) or there is none"
    )
    held_by: list[str] = Field(description="the other peers shown to hold it")
    wanted: int = Field(
        description="copies on other peers it waited for: [builds] min_copies, or fewer "
        "when fewer peers were connected (0 on a lone node)"
    )
    note: str = Field("", description="for a person: e.g. why it is held by this node alone")


class ReleaseProgress(Response):
    """A release under way on this node, as its CLI shows it while it waits."""

    stage: str = Field(
        description="none (no such release under way), checking, storing, copying, binding"
    )
    cid: str = ""
    size: int = 0
    copies: int = Field(default=0, description="other peers shown to hold the build so far")
    wanted: int = Field(default=0, description="copies needed on other peers")
    peers: int = Field(default=0, description="connected peers that store builds")
    sent: int = Field(default=0, description="bytes of the build this node has sent meanwhile")


class DeprecateBody(Request):
    account: str = Field("default", max_length=64)
    name: str = Field(max_length=200)


class ModelInfo(Response):
    """A model listing's ``[model]`` table: the model, and its prices per 1,000 tokens."""

    family: str = Field(description="e.g. llama, qwen2")
    parameters: int = Field(description="the model's number of parameters")
    quantisation: str = Field(description="e.g. F16, Q4_K_M")
    context_length: int = Field(description="tokens")
    input_price: int = Field(description="lamports per 1,000 input (prompt) tokens")
    output_price: int = Field(description="lamports per 1,000 output (completion) tokens")
    weights: str = Field("", description='"sha256:" and 64 hex digits, or "" where not known')


class Listing(OpenResponse):
    """A listing as the registry shows it: its fields, publisher and releases. A
    release with no build (a model's may have none) has ``cid`` "" and ``size`` 0."""

    model: ModelInfo | None = Field(
        None, description='kind "model" only: priced per 1,000 tokens (its price is 0)'
    )


class Released(Listing):
    """The listing after the release, and what the release did."""

    released: ReleaseOutcome


class RegistryDigest(Response):
    """A fingerprint of this node's whole registry replica: two replicas that hold
    the same feeds at the same signed updates have the same digest (anti-entropy
    compares the same hash)."""

    digest: str = Field(description="hex SHA-256 over every feed's state vector and content hash")
    feeds: int = Field(description="publishers whose feed this replica holds")


class SearchPage(Response):
    results: list[dict[str, Any]]
    cursor: str | None = Field(description="pass back for the next page; null at the end")
    took_ms: float
    peer: str | None = Field(None, description="the peer that answered, when one was asked")


class Resolution(OpenResponse):
    """Releases in range, and a plan with every dependency resolved. For a listing
    sold by plan: the licence held here that the newest covered release runs
    under, a newer release that needs another plan, or why none is held."""

    licence: str = ""
    licence_required: str = ""
    upgrade: Upgrade | None = None


# -- runtime -----------------------------------------------------------------


class RunBody(Request):
    wasm: str = Field(description="the module, base64")
    input: str = Field("", description="stdin, base64")
    limits: dict[str, Any] = Field(
        default_factory=dict,
        description="fuel, timeout_s, memory_mb, max_input_bytes, max_output_bytes, table_elements",
    )


class RunOutcome(OpenResponse):
    outcome: str
    output: str = Field(description="stdout, base64")
    stderr: str = Field(description="stderr, base64")
    usage: dict[str, Any]


# -- builds ------------------------------------------------------------------


class Build(Response):
    cid: str
    size: int
    chunks: int
    have: int
    complete: bool
    pinned: bool


class Builds(Response):
    builds: list[Build]
    used_bytes: int
    quota_bytes: int


class AddBody(Request):
    path: str = Field(max_length=MAX_PATH_CHARS, description="absolute path of the file")
    pin: bool = True


class FetchBody(Request):
    cid: str = Field(max_length=200)
    peers: list[str] | None = Field(None, max_length=16, description="peer ids or multiaddrs")
    pin: bool = False


class Fetch(Response):
    cid: str
    size: int
    done: int
    providers: int
    corrupt_providers: int
    finished: bool
    error: str | None


class BuildProgress(Response):
    fetch: Fetch | None
    build: Build | None


class Pinned(Response):
    cid: str
    pinned: bool


class Verified(Response):
    cid: str
    damaged_chunks: list[int]


class Collected(Response):
    removed: list[str]


# -- tasks -------------------------------------------------------------------


class Providers(Response):
    agent: str
    providers: list[dict[str, Any]]


BUDGET = (
    "lamports the whole run may cost, a composite agent's sub-calls included "
    "(default: its price alone: only free sub-calls)"
)


class TaskBody(Request):
    agent: str = Field(max_length=120, description="PUBLISHER/NAME")
    version: str = Field("*", max_length=64, description="a semver range such as ^1.0.0")
    input: str = Field("", description="base64")
    provider: str | None = Field(None, max_length=MAX_PEER_CHARS)
    max_price: int | None = Field(
        None, ge=0, le=10**15, description="lamports a task at most (default: the listing's)"
    )
    budget: int | None = Field(None, ge=0, le=10**15, description=BUDGET)
    approved: bool = Field(
        False, description="a human confirmed this run, above [spending] approve_above"
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=IDEMPOTENCY_KEY,
        description="a retry with this key returns the first run's result, never runs again"
        " (24 h); also the Idempotency-Key header",
    )


class QuoteBody(Request):
    agent: str = Field(max_length=120, description="PUBLISHER/NAME")
    version: str = Field("*", max_length=64, description="a semver range such as ^1.0.0")
    input_size: int = Field(0, ge=0, le=2**40, description="bytes of the input to run")
    provider: str | None = Field(None, max_length=MAX_PEER_CHARS)
    budget: int | None = Field(None, ge=0, le=10**15, description=BUDGET)


class TaskQuote(Response):
    """The best quote a run would take now, and what this node's spending limits say."""

    agent: str
    version: str
    cid: str
    provider: str
    price: int = Field(description="lamports")
    subcalls_max: int = Field(
        description="lamports its sub-calls may cost at most (0: an agent that calls none, "
        "or no budget for them)"
    )
    most: int = Field(description="lamports the run may cost in all: price + subcalls_max")
    expected_ms: int
    load: float
    creator: str
    royalty_bps: int
    expires: float = Field(description="unix time; the provider honours it until then")
    needs_approval: bool = Field(
        description="most, or the budget asked if more (a run is weighed by its budget), is "
        "over [spending] approve_above: run with approved=true once a human confirmed it"
    )
    left_today: int | None = Field(description="lamports left under max_per_day, or null")


class Spending(Response):
    """What this node's tasks paid today (UTC), and its [spending] limits."""

    day: str = Field(description="YYYY-MM-DD, UTC")
    spent_today: int = Field(description="lamports the tasks of today paid")
    reserved: int = Field(description="lamports the runs in flight may still pay")
    left_today: int | None = Field(description="lamports left under max_per_day, or null")
    max_per_task: int | None
    max_per_day: int | None
    approve_above: int | None


class UpgradePlan(Response):
    name: str
    kind: str
    price: int = Field(description="lamports")
    versions: str


class Upgrade(Response):
    """A newer release than the licence used covers, and the plans that cover it."""

    version: str
    plans: list[UpgradePlan]


class SubCallView(Response):
    """One call out of a composite agent's run, as its receipt lists it."""

    op: str = Field(description='"call" (an agent) or "infer" (a model)')
    target: str = Field(description="the listing called, PUBLISHER/NAME")
    status: int = Field(description="0 if it succeeded, else the HostStatus the agent got")
    status_name: str = Field(description='"ok", or the status\'s name, e.g. "over_budget"')
    error: str = Field(description="why it failed; empty if it succeeded")
    cost: int = Field(description="lamports the user pays for it (0 unless it succeeded)")
    provider: str = Field(description="the peer that served it, by its receipt; empty if none")
    receipt_signed: str = Field(description="its provider's signed receipt, base64; or empty")


class TaskDone(Response):
    task: str
    output: str = Field(description="base64")
    provider: str
    receipt: dict[str, Any]
    verified: str
    cost: int = Field(0, description="lamports the run cost in all: its price and its sub-calls'")
    subcalls: list[SubCallView] = Field(
        default_factory=list, description="a composite agent's calls out, in order; else empty"
    )
    attempts: list[dict[str, Any]] = Field(
        description="providers tried before, and why they failed"
    )
    licence: str = Field("", description="the mint of the licence the run used, or empty")
    upgrade: Upgrade | None = Field(
        None, description="a newer release this node's licence does not cover, and its plans"
    )


class TaskSide(OpenResponse):
    """One side of a task as this node's task log holds it."""

    id: str
    role: str
    agent: str
    status: str
    input_tokens: int = Field(0, description="a model call's prompt tokens; 0 for an agent")
    output_tokens: int = Field(0, description="a model call's completion tokens")
    subcalls: list[SubCallView] = Field(
        default_factory=list,
        description="its receipt's sub-calls (a composite agent's); one task's view only",
    )


class Tasks(Response):
    tasks: list[TaskSide]


class UsageCounts(Response):
    """Calls of one side (or one listing on it), what they read and wrote, and paid."""

    calls: int
    calls_ok: int = Field(description="those whose status is ok")
    input_tokens: int
    output_tokens: int
    lamports: int = Field(description="paid (user side) or earned (provider side)")


class UsageRow(UsageCounts):
    role: str = Field(description="user: this node paid; provider: it earned")
    agent: str = Field(description="PUBLISHER/NAME: the model's or agent's listing")


class UsageByProvider(UsageRow):
    """A usage row per listing and provider (``by=provider``)."""

    provider: str = Field(
        description="the provider's peer id (this node's on the provider side; empty for "
        "tasks no provider ran)"
    )


class UsageTotals(Response):
    user: UsageCounts = Field(description="what this node asked of others, and spent")
    provider: UsageCounts = Field(description="what it served others, and earned")


class Usage(Response):
    """The task log's calls over the last ``days``, per side and listing (and provider,
    with ``by=provider``), and totals."""

    days: int
    since: float = Field(description="unix seconds: the calls counted were made then or later")
    usage: list[UsageByProvider | UsageRow] = Field(
        description="the user side first, then most lamports first"
    )
    totals: UsageTotals


class Task(Response):
    task: str
    sides: list[TaskSide]


class Proof(Response):
    """A paid task's receipt checked against its channel's close on the ledger."""

    task: str
    channel: str = Field(description="the channel's stake account")
    signature: str = Field(description="the closing transaction")
    slot: int
    block_time: int | None
    root: str = Field(description="the Merkle root the close's memo commits to (hex)")
    count: int = Field(description="how many receipts that root is over")
    index: int = Field(description="the receipt's place among them, from 0")
    leaf: str = Field(description="sha256 of b'mercato/receipt-leaf/v1\\0' + the signed receipt")
    path: list[str] = Field(description="sibling hashes from the leaf up to the root (hex)")
    verified: bool
    reason: str = Field("", description="why it is not verified")


# -- money -------------------------------------------------------------------


class Held(Response):
    """Royalties this node's closes received for creators, and their forwarding."""

    due: int = Field(description="lamports waiting until the ledger can take them")
    sending: int = Field(description="lamports in a forward not yet confirmed")
    paid: int = Field(description="lamports forwarded so far")
    recipients: dict[str, int] = Field(description="what is still held, per creator")


class TokenHolding(Response):
    """What the wallet's associated token account holds of one SPL mint."""

    mint: str
    amount: int = Field(description="base units")
    decimals: int


class Wallet(Response):
    address: str
    ledger: str
    balance: int
    now: int
    held: Held
    tokens: list[TokenHolding] = Field(
        default_factory=list,
        description="the test mint's on a local ledger, and [gateway] asset's when set",
    )


class AirdropBody(Request):
    lamports: int


class Airdropped(Wallet):
    signature: str


class Channel(Response):
    payer: str
    payee: str
    stake: str
    nonce: str
    deposit: int
    expires: int
    role: str
    peer: str
    status: str
    paid: int
    left: int
    owed: dict[str, int]
    settled: dict[str, int]
    receipts: int = Field(0, description="task receipts the latest state commits to")


class Channels(Response):
    channels: list[Channel]


class OpenBody(Request):
    peer: str = Field(max_length=MAX_PEER_CHARS, description="the payee's peer id")
    deposit_lamports: int
    duration_s: int
    payee: str | None = Field(None, max_length=64, description="else its agent card's wallet")


class Settled(Channel):
    signature: str


# -- commerce ----------------------------------------------------------------

PLAN_NAME = r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$"


class BuyBody(Request):
    agent: str = Field(max_length=120, description="PUBLISHER/NAME")
    plan: str = Field(max_length=32, description="the plan's name, as the listing shows it")
    approved: bool = Field(
        False, description="a human confirmed this purchase, above [spending] approve_above"
    )


class Licence(Response):
    """A licence or subscription bought (``party``: its creator) or sold (its buyer)."""

    mint: str = Field(description="the licence token's mint: its id on the ledger")
    agent: str = Field(description="PUBLISHER/NAME")
    plan: str
    kind: Literal["licence", "subscription"]
    versions: str = Field(description="the releases it covers, a semver range")
    expires: int = Field(description="unix seconds; 0: never (a licence)")
    refund_until: int = Field(description="unix seconds; 0: no refunds")
    price: int = Field(description="lamports paid to the creator")
    party: str = Field(description="the creator (a licence held) or the buyer (one sold)")
    signature: str = Field(description="the purchase transaction's signature")
    time: float = Field(description="unix seconds, when it was bought")
    refunded: str = Field(description="the refund's transaction signature, or empty")
    pending: int = Field(0, description="1 while its purchase is sent and not yet on the ledger")
    state: Literal["pending", "active", "expired", "refunded"]


class Licences(Response):
    licences: list[Licence]


class SaleTotal(Response):
    agent: str
    plan: str
    sales: int
    lamports: int = Field(description="earned, refunds deducted")
    refunds: int


class Sales(Response):
    sales: list[Licence] = Field(description="newest first")
    totals: list[SaleTotal] = Field(description="per listing and plan")


class EarnedListing(Response):
    """What one listing this node served earned it over the period."""

    agent: str = Field(description="PUBLISHER/NAME")
    creator: bool = Field(description="whether this node is the listing's creator")
    tasks: int = Field(description="tasks and model calls served")
    tasks_ok: int = Field(description="those whose outcome is ok")
    gross: int = Field(description="lamports the users paid for them in all")
    revenue: int = Field(description="lamports of it for this node")
    royalties: int = Field(
        description="lamports of it for the creator (paid at the close, or held and forwarded)"
    )


class EarnedChannel(Response):
    """A channel this node is paid on: closed in the period, or still open."""

    stake: str = Field(description="the channel's stake account")
    peer: str = Field(description="the payer's peer id")
    status: str = Field(description="open, closing or closed")
    paid: int = Field(description="lamports its latest state pays in all")
    earned: int = Field(description="lamports of it for this node itself")
    royalties: int = Field(description="lamports of it for creators")
    updated: float = Field(description="unix seconds of its last change (the close)")


class EarnedTotals(Response):
    tasks: int
    tasks_ok: int
    gross: int
    revenue: int
    royalties: int
    closed_earned: int = Field(description="what the channels closed in the period paid this node")
    open_earned: int = Field(description="what the open channels pay this node so far")


class Earnings(Response):
    """What this node earned over a period, per listing served and per channel."""

    since: float = Field(description="unix seconds: the start of the period")
    days: float = Field(description="the period's length in days, to now")
    wallet: str = Field(description="this node's wallet: the payee of its channels")
    listings: list[EarnedListing] = Field(description="most revenue first")
    channels: list[EarnedChannel] = Field(description="oldest change first")
    totals: EarnedTotals
