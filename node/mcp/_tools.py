"""The MCP server: mercato's tools and resources for AI agents.

One `MCPServer` (the official SDK) whose tools send control API requests
through a `Backend`, so they are the same over stdio and over ``/mcp``. Every
refusal of the node (a listing that does not exist, a price over the caller's
maximum, the spending policy) comes back as a tool error whose message says
what to do; nothing a caller sends crashes the server.

A run above the node's ``[spending] approve_above`` is confirmed by the human
through MCP elicitation (agent, provider, price) before anything is paid; a
decline or no answer charges nothing.
"""

import base64
import binascii
import re
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from mcp.server.mcpserver import (
    AcceptedElicitation,
    Elicit,
    ElicitationResult,
    MCPServer,
    Resolve,
)
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import BaseModel, Field

from .._errors import ControlError, DaemonNotRunning
from .._version import __version__
from ._backend import Backend

INSTRUCTIONS = """\
mercato is a peer-to-peer marketplace of AI agents (WASM builds run by providers in
sandboxes) and models. Find a capability with search_listings, look at a listing with
show_listing and at who serves it with list_providers, ask for a price with quote,
then run_agent: it pays the provider through a payment channel (lamports, on Solana)
and returns the output with a receipt id (get_task shows the receipt). Prices are in
lamports (1 SOL = 1,000,000,000). A composite agent calls other agents and models as
paid sub-calls: give quote and run_agent a `budget` (the most the whole run may cost),
else only its free sub-calls succeed. The node's owner sets spending limits; runs above
a threshold need the human's confirmation, which this server asks for. A listing with
`plans` runs only under a licence or subscription: buy_licence buys one from its
creator's node, list_licences shows those held, and runs use them on their own."""

MAX_INPUT_BYTES = 8 * 1024 * 1024
_TASK_ID = re.compile(r"[0-9a-f]{32}")


class Confirm(BaseModel):
    """What the human answers when a run needs confirmation."""

    confirm: bool = Field(description="Pay this price and run the agent?")


def build_server(backend: Backend, name: str = "mercato") -> MCPServer:
    """The MCP server over ``backend``: every tool and resource registered."""
    server: MCPServer = MCPServer(
        name=name,
        title="mercato",
        version=__version__,
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )
    call = _caller(backend)

    @server.tool(annotations=_read_only())
    async def search_listings(
        text: str = "",
        kind: str | None = None,
        capability: str | None = None,
        tag: str | None = None,
        max_price: int | None = None,
        sort: str = "relevance",
        cursor: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """Search the marketplace for agents and models. `text` matches words (each a
        prefix) in names, titles, summaries and tags; `kind` is "agent" or "model";
        `capability` and `tag` filter exactly; `max_price` in lamports per run; `sort`
        is relevance, price or newest; pass the returned `cursor` for the next page.
        Each result names its publisher and name: use them with show_listing and
        `PUBLISHER/NAME` as the agent of quote and run_agent."""
        query = {
            "text": text, "kind": kind, "capability": capability, "tag": tag,
            "max_price": max_price, "sort": sort, "cursor": cursor, "limit": limit,
        }  # fmt: skip
        params = urlencode({k: v for k, v in query.items() if v not in (None, "")})
        return await call("GET", f"/v1/registry/search?{params}")

    @server.tool(annotations=_read_only())
    async def show_listing(publisher: str, name: str) -> dict[str, Any]:
        """One listing in full: description, price per run (lamports), royalty,
        resource limits, every release (version and build id), newest first, and its
        `plans` when it runs only under a licence or subscription (buy_licence)."""
        return await call("GET", _listing_path(publisher, name))

    @server.tool(annotations=_read_only())
    async def list_providers(agent: str) -> dict[str, Any]:
        """The providers serving `agent` (PUBLISHER/NAME) that this node knows, best
        first: each with its price (lamports), load, this node's reputation of it
        (0 to 1, 0.5 for a stranger) and the score it is ranked by."""
        return await call("GET", f"/v1/providers?{urlencode({'agent': agent})}")

    @server.tool(annotations=_read_only())
    async def quote(
        agent: str, version: str = "*", input_size: int = 0, budget: int | None = None
    ) -> dict[str, Any]:
        """Ask the providers of `agent` (PUBLISHER/NAME) for a price for one run on an
        input of `input_size` bytes, and return the best quote: provider, price in
        lamports, expected time, and whether the node's owner must confirm it. Give the
        `budget` you will run with (lamports, the whole run): `subcalls_max` is what a
        composite agent's sub-calls may then cost, `most` the price plus that."""
        return await call(
            "POST", "/v1/tasks/quote", _quote_body(agent, version, input_size, budget)
        )

    async def approval(
        agent: str,
        version: str = "*",
        input_text: str | None = None,
        input_base64: str | None = None,
        max_price: int | None = None,
        budget: int | None = None,
    ) -> Any:
        """The best quote; a question for the human when it needs their approval.
        (Run before the tool, and again on a retry round of newer protocols.)"""
        size = len(_input(input_text, input_base64))
        body = _quote_body(agent, version, size, budget)
        offer: dict[str, Any] = await call("POST", "/v1/tasks/quote", body)
        if max_price is not None and offer["price"] > max_price:
            raise ToolError(
                f"the best quote for {agent} is {offer['price']} lamports, above your "
                f"max_price of {max_price}: raise max_price or choose another agent"
            )
        if not offer.get("needs_approval"):
            return offer
        within = f", within a budget of {budget} lamports with its sub-calls" if budget else ""
        return Elicit(
            f"Run {agent} on provider {offer['provider']} for {offer['price']} lamports "
            f"({offer['price'] / 1e9:.9f} SOL){within}? It is above the node's approve_above "
            "limit.",
            Confirm,
        )

    @server.tool()
    async def run_agent(
        agent: str,
        answer: Annotated[ElicitationResult[Any], Resolve(approval)],
        input_text: str | None = None,
        input_base64: str | None = None,
        version: str = "*",
        max_price: int | None = None,
        idempotency_key: str | None = None,
        budget: int | None = None,
    ) -> dict[str, Any]:
        """Run `agent` (PUBLISHER/NAME) once on the best provider and pay for it.
        Give the input as `input_text` (UTF-8) or `input_base64` (bytes). `max_price`
        caps its price (lamports). `budget` caps what the whole run may cost
        (lamports), a composite agent's paid sub-calls included; without it only
        free sub-calls succeed. Pass an `idempotency_key` (any unique string) to
        retry safely: a retry with the same key returns the first result and never
        pays twice. A run that may cost more than the owner's approve_above limit
        is put to the user first. Returns the output (as text when it is UTF-8, and
        as base64), the provider, the price, `cost` (price plus sub-calls), each
        sub-call (op, target, status_name, cost, error) and the task id of the
        receipt (get_task, or the resource mercato://task/{id}); for a listing sold
        by plan, the licence used and `upgrade`, a newer release it does not cover
        and the plans that do."""
        stdin = _input(input_text, input_base64)
        body: dict[str, Any] = {
            "agent": agent,
            "version": version,
            "input": base64.b64encode(stdin).decode(),
        }
        if max_price is not None:
            body["max_price"] = max_price
        if budget is not None:
            body["budget"] = budget
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if not isinstance(answer, AcceptedElicitation):
            raise ToolError(
                f"the user did not confirm the run ({answer.action}); nothing was charged"
            )
        if isinstance(answer.data, Confirm):
            if not answer.data.confirm:
                raise ToolError("the user did not confirm the run; nothing was charged")
            # Confirmed: the quote the user saw (the node keeps it for a while).
            offer = await call(
                "POST", "/v1/tasks/quote", _quote_body(agent, version, len(stdin), budget)
            )
            body.update(provider=offer["provider"], max_price=offer["price"], approved=True)
        done = await call("POST", "/v1/tasks/run", body)
        return _done(done)

    @server.tool(annotations=_read_only())
    async def list_tasks(limit: int = 20, role: str | None = None) -> dict[str, Any]:
        """Recent tasks, newest first: `role` "user" (runs this node paid for) or
        "provider" (runs it served), or both."""
        query = {"limit": limit, **({"role": role} if role else {})}
        return await call("GET", f"/v1/tasks?{urlencode(query)}")

    @server.tool(annotations=_read_only())
    async def get_task(task_id: str) -> dict[str, Any]:
        """One task: its signed receipt (agent, build, input and output hashes, fuel,
        time, price, channel, sub-calls and what they cost) and whether this node
        verified it; a composite agent's `subcalls` with their status names."""
        return await call("GET", _task_path(task_id))

    @server.tool(annotations=_read_only())
    async def wallet() -> dict[str, Any]:
        """This node's wallet: Solana address, balance (lamports), its payment
        channels (deposit, what is paid, what is left, and `expires`: until when the
        deposit is locked, unix seconds), and today's spending against the limits."""
        money = await call("GET", "/v1/wallet")
        channels = await call("GET", "/v1/channels")
        try:
            spending = await call("GET", "/v1/spending")
        except ToolError:
            spending = None
        return {**money, "channels": channels["channels"], "spending": spending}

    async def purchase_approval(agent: str, plan: str) -> Any:
        """A question for the human when the plan's price needs their approval."""
        publisher, _, name = agent.partition("/")
        try:
            listing = await call("GET", _listing_path(publisher, name))
        except ToolError:  # a bad or unknown listing: the purchase itself says what is wrong
            return {"price": 0}
        price = int(((listing.get("plans") or {}).get(plan) or {}).get("price", 0))
        limits = await call("GET", "/v1/spending")
        above = limits.get("approve_above")
        if above is None or price <= above:
            return {"price": price}
        return Elicit(
            f"Buy the plan {plan} of {agent} for {price} lamports ({price / 1e9:.9f} SOL)? "
            "It is above the node's approve_above limit.",
            Confirm,
        )

    @server.tool()
    async def buy_licence(
        agent: str,
        plan: str,
        answer: Annotated[ElicitationResult[Any], Resolve(purchase_approval)],
    ) -> dict[str, Any]:
        """Buy `plan` (a licence or subscription, as show_listing's `plans` name it) of
        `agent` (PUBLISHER/NAME) from its creator's node, which must be online. It pays
        the plan's price (lamports) from this node's wallet to the creator, once for a
        licence or per period for a subscription: ask the user before buying. Returns
        the licence: its mint (its id), the versions it covers, when it expires (0:
        never) and until when it can be refunded (0: no refunds). Runs of the agent
        then use it without further steps. A price above the owner's approve_above limit
        is put to the user first."""
        body: dict[str, Any] = {"agent": agent, "plan": plan}
        if not isinstance(answer, AcceptedElicitation):
            raise ToolError(
                f"the user did not confirm the purchase ({answer.action}); nothing was paid"
            )
        if isinstance(answer.data, Confirm):
            if not answer.data.confirm:
                raise ToolError("the user did not confirm the purchase; nothing was paid")
            body["approved"] = True
        return await call("POST", "/v1/licences", body)

    @server.tool(annotations=_read_only())
    async def list_licences() -> dict[str, Any]:
        """The licences and subscriptions this node bought, newest first: agent, plan,
        versions covered, state (active, expired or refunded), `expires` and
        `refund_until` (unix seconds, 0: never / no refunds) and the mint."""
        return await call("GET", "/v1/licences")

    @server.tool()
    async def refund_licence(mint: str) -> dict[str, Any]:
        """Ask the creator's node to refund the licence `mint` (from list_licences)
        within its refund window: the price comes back to this node's wallet and the
        licence stops working. The creator's node must be online."""
        return await call("POST", _refund_path(mint))

    @server.tool(annotations=_read_only())
    async def list_sales() -> dict[str, Any]:
        """What this node's creators sold: every licence sold (newest first: buyer,
        plan, price, state) and totals per listing and plan (sales, refunds, lamports
        earned with refunds deducted)."""
        return await call("GET", "/v1/sales")

    @server.tool()
    async def publish_listing(manifest: dict[str, Any], account: str = "default") -> dict[str, Any]:
        """Create or update a listing, signed by the node's `account` key. `manifest`
        has the fields of MANIFEST.toml: name, kind ("agent" or "model"), title,
        summary, description, tags, capabilities, price (lamports per run),
        royalty_bps (0-10000), limits, and optional plans (licences or subscriptions:
        {"pro": {"kind": "licence", "price": lamports, "versions": "^1", ...}}). A wrong
        field is refused, naming it."""
        return await call("POST", "/v1/registry/publish", {"account": account, "listing": manifest})

    @server.tool()
    async def release_build(
        name: str,
        version: str,
        build_path: str | None = None,
        cid: str | None = None,
        size: int | None = None,
        account: str = "default",
    ) -> dict[str, Any]:
        """Release `version` (semver) of listing `name`: bind it, once and for all, to
        a build. Give `build_path` (the absolute path of a .wasm file on the node's
        machine: it is checked in the sandbox, stored and offered to peers) or `cid`
        and `size` of a build already stored."""
        if (build_path is None) == (cid is None):
            raise ToolError("give either build_path (a .wasm file) or cid (a stored build)")
        release: dict[str, Any] = {"name": name, "version": version}
        body: dict[str, Any] = {"account": account, "release": release}
        if build_path is not None:
            body["build"] = build_path
        else:
            release.update(cid=cid, size=size)
        return await call("POST", "/v1/registry/release", body)

    @server.tool()
    async def deprecate_listing(name: str, account: str = "default") -> dict[str, Any]:
        """Mark listing `name` deprecated: it leaves search results; releases stay."""
        return await call("POST", "/v1/registry/deprecate", {"account": account, "name": name})

    @server.resource(
        "mercato://listing/{publisher}/{name}",
        name="listing",
        description="A listing with its releases, as JSON",
        mime_type="application/json",
    )
    async def listing_resource(publisher: str, name: str) -> dict[str, Any]:
        return await _read(call, _listing_path(publisher, name))

    @server.resource(
        "mercato://task/{task_id}",
        name="task",
        description="A task's receipt and its verification, as JSON",
        mime_type="application/json",
    )
    async def task_resource(task_id: str) -> dict[str, Any]:
        return await _read(call, _task_path(task_id))

    return server


def _caller(backend: Backend) -> Any:
    async def call(method: str, path: str, body: Any = None) -> Any:
        try:
            return await backend.request(method, path, body)
        except DaemonNotRunning as exc:
            raise ToolError(str(exc)) from exc
        except ControlError as exc:
            said = str(exc)  # the code once: a message may start with it already
            if exc.code and not said.startswith(f"{exc.code}:"):
                said = f"{exc.code}: {said}"
            raise ToolError(said) from exc

    return call


async def _read(call: Any, path: str) -> dict[str, Any]:
    try:
        found: dict[str, Any] = await call("GET", path)
    except ToolError as exc:
        raise ResourceError(str(exc)) from exc
    return found


def _input(text: str | None, b64: str | None) -> bytes:
    if text is not None and b64 is not None:
        raise ToolError("give the input as input_text or input_base64, not both")
    if b64 is not None:
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ToolError("input_base64 is not valid base64") from exc
    else:
        data = (text or "").encode()
    if len(data) > MAX_INPUT_BYTES:
        raise ToolError(f"the input is {len(data)} bytes; at most {MAX_INPUT_BYTES} are sent")
    return data


def _done(done: dict[str, Any]) -> dict[str, Any]:
    output = base64.b64decode(done["output"])
    try:
        text: str | None = output.decode()
    except UnicodeDecodeError:
        text = None
    receipt = done.get("receipt") or {}
    price = receipt.get("price", 0)
    return {
        "task": done["task"],
        "provider": done["provider"],
        "price": price,
        "cost": done.get("cost", price),
        "subcalls": [
            {k: c[k] for k in ("op", "target", "status_name", "cost", "error", "provider")}
            for c in done.get("subcalls") or []
        ],
        "output_text": text,
        "output_base64": done["output"],
        "verified": done.get("verified"),
        "receipt": receipt,
        "licence": done.get("licence", ""),
        "upgrade": done.get("upgrade"),
    }


def _quote_body(agent: str, version: str, input_size: int, budget: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"agent": agent, "version": version, "input_size": input_size}
    if budget is not None:
        body["budget"] = budget
    return body


def _listing_path(publisher: str, name: str) -> str:
    return f"/v1/registry/listings/{quote(publisher, safe='')}/{quote(name, safe='')}"


def _refund_path(mint: str) -> str:
    return f"/v1/licences/{quote(mint, safe='')}/refund"


def _task_path(task_id: str) -> str:
    if not _TASK_ID.fullmatch(task_id.lower()):
        raise ToolError("a task id is 32 hex digits, as run_agent and list_tasks return it")
    return f"/v1/tasks/{task_id.lower()}"


def _read_only() -> Any:
    from mcp.types import ToolAnnotations

    return ToolAnnotations(read_only_hint=True)
