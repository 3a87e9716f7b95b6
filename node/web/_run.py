"""Run: input as text or a file, the quote and the providers, a confirmation
that shows the price (the node's spending policy applies), then the run as a
background job with its output and receipt."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import UploadFile

from mercato import MercatoError

from ._app import redirect

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web
    from ._jobs import Job

AGENT = re.compile(r"[1-9A-HJ-NP-Za-km-z]{32,44}/[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
MAX_DRAFTS = 32
MAX_TEXT_INPUT = 1024 * 1024


@dataclass(frozen=True)
class Draft:
    """A run the user asked a quote for, waiting for the confirmation."""

    agent: str
    version: str
    stdin: bytes
    provider: str
    price: int


def _drafts(web: Web) -> dict[str, Draft]:
    drafts: dict[str, Draft] = web.state.setdefault("drafts", {})
    return drafts


async def run_form(web: Web, request: Request) -> Response:
    agent = request.query_params.get("agent", "")[:120]
    version = request.query_params.get("version", "*")[:64]
    return await _form(web, request, {"agent": agent, "version": version}, {})


async def _form(
    web: Web, request: Request, values: dict[str, str], errors: dict[str, str], code: int = 200
) -> Response:
    listing = None
    if AGENT.fullmatch(values.get("agent", "")):
        publisher, name = values["agent"].split("/")
        try:
            listing = (await web.api.registry.show(publisher, name)).model_dump()
        except MercatoError:
            listing = None
    spending = await web.api.tasks.spending()
    return web.render(
        request,
        "run.html",
        code=code,
        title="Run",
        values=values,
        errors=errors,
        listing=listing,
        spending=spending,
    )


async def quote(web: Web, request: Request) -> Response:
    form = await web.form(request)
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "_csrf"}
    errors: dict[str, str] = {}
    agent = values.get("agent", "").strip()
    version = values.get("version", "").strip() or "*"
    if not AGENT.fullmatch(agent):
        errors["agent"] = "PUBLISHER/NAME, as the listing's page shows it"
    if len(version) > 64:
        errors["version"] = "a version range such as ^1.0.0, or * for the newest"
    upload = form.get("input_file")
    text = values.get("input", "")
    if isinstance(upload, UploadFile) and upload.filename and upload.size:
        stdin = await upload.read()
    else:
        if len(text) > MAX_TEXT_INPUT:
            errors["input"] = f"at most {MAX_TEXT_INPUT} characters; send a larger input as a file"
        stdin = text.replace("\r\n", "\n").encode()
    if errors:
        return await _form(web, request, values, errors, code=400)
    try:
        offer = await web.api.tasks.quote(agent, version, len(stdin))
    except MercatoError as exc:
        errors["agent"] = str(exc)
        return await _form(web, request, values, errors, code=_code(exc))
    drafts = _drafts(web)
    while len(drafts) >= MAX_DRAFTS:
        drafts.pop(next(iter(drafts)))
    draft_id = secrets.token_urlsafe(16)
    drafts[draft_id] = Draft(offer.agent, offer.version, stdin, offer.provider, offer.price)
    spending = await web.api.tasks.spending()
    return web.render(
        request,
        "run_confirm.html",
        title="Confirm the run",
        quote=offer,
        draft=draft_id,
        size=len(stdin),
        spending=spending,
        providers=(await web.api.tasks.providers(agent)).providers,
    )


def _code(exc: MercatoError) -> int:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else 502


async def start(web: Web, request: Request) -> Response:
    form = await web.form(request)
    draft_id = form.get("draft")
    draft = _drafts(web).pop(draft_id, None) if isinstance(draft_id, str) else None
    if draft is None:
        return web.render(
            request,
            "error.html",
            code=409,
            title="Run",
            message="This confirmation was used or has expired; ask for a new quote.",
        )

    async def work(job: Job) -> dict[str, Any]:
        job.step(f"running {draft.agent}@{draft.version} on {draft.provider}")
        done = await web.api.tasks.run(
            draft.agent,
            draft.version,
            draft.stdin,
            provider=draft.provider,
            max_price=draft.price,
            approved=True,
            idempotency_key=f"web-{draft_id}",
        )
        output = base64.b64decode(done.output)
        try:
            text, binary = output.decode(), False
        except UnicodeDecodeError:
            text, binary = done.output, True
        job.step(f"verified: {done.verified}")
        return {
            "task": done.task,
            "provider": done.provider,
            "output": text,
            "binary": binary,
            "size": len(output),
            "receipt": done.receipt,
            "verified": done.verified,
            "attempts": done.attempts,
            "price": draft.price,
            "agent": draft.agent,
            "upgrade": done.upgrade.model_dump() if done.upgrade else None,
        }

    job = web.jobs.start("run", f"Run {draft.agent}", work)
    return redirect(f"/jobs/{job.id}")


PAGES = (
    ("/run", run_form, ["GET"]),
    ("/run/quote", quote, ["POST"]),
    ("/run/start", start, ["POST"]),
)
