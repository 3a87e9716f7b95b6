"""Publish: a listing form checked by the registry's own schema (errors next to
their field), and a release: a build uploaded from the browser, checked,
stored, and spread to the peers responsible for it while the page watches."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.datastructures import UploadFile

from mercato import MercatoError
from mercato.crdt import SchemaError, validate_release

from ._app import redirect

if TYPE_CHECKING:
    from starlette.datastructures import FormData
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web
    from ._jobs import Job

KINDS = (("agent", "Agent"), ("model", "Model"))
TEXT = ("name", "kind", "title", "summary", "description", "license")
WHOLE = ("price", "royalty_bps")
LIMITS = ("fuel", "memory_mb", "timeout_s", "max_input_bytes", "max_output_bytes")
MAX_FIELD_CHARS = 20_000
UPLOAD_CHUNK = 1024 * 1024


async def _accounts(web: Web) -> dict[str, str]:
    """Account name -> address (the publisher id its listings are under)."""
    keys = await web.api.node.keys_list()
    return {k.name: k.address for k in keys.keys if k.kind == "account"}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _listing_from(form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """The listing the form describes, and an error per field it cannot even parse."""
    errors: dict[str, str] = {}
    listing: dict[str, Any] = {}
    for name in TEXT:
        value = form.get(name)
        text = value if isinstance(value, str) else ""
        if len(text) > MAX_FIELD_CHARS:
            errors[name] = f"at most {MAX_FIELD_CHARS} characters"
        listing[name] = text.replace("\r\n", "\n").strip()
    for name in WHOLE:
        text = _text(form, name)
        if not text.isdigit() or len(text) > 16:
            errors[name] = "a whole number, 0 or more"
        else:
            listing[name] = int(text)
    listing["tags"] = [t for t in _text(form, "tags").replace(",", " ").split() if t]
    listing["capabilities"] = [
        c for c in _text(form, "capabilities").replace(",", " ").split() if c
    ]
    listing["links"] = [line.strip() for line in _text(form, "links").splitlines() if line.strip()]
    limits = {}
    for name in LIMITS:
        text = _text(form, name)
        if text and (not text.isdigit() or len(text) > 16):
            errors[name] = "a whole number, or empty for the default"
        elif text:
            limits[name] = int(text)
    if limits:
        listing["limits"] = limits
    return listing, errors


def _form_values(listing: dict[str, Any]) -> dict[str, str]:
    """A listing as the form's text fields (to fill the form again)."""
    values = {k: str(listing.get(k, "")) for k in (*TEXT, *WHOLE)}
    values["tags"] = ", ".join(listing.get("tags", []))
    values["capabilities"] = ", ".join(listing.get("capabilities", []))
    values["links"] = "\n".join(listing.get("links", []))
    for name in LIMITS:
        values[name] = str(listing.get("limits", {}).get(name, ""))
    return values


def _schema_field(exc: SchemaError) -> str:
    """The form field a schema error is about: ``limits.fuel`` is the ``fuel`` field,
    ``links[0]`` the ``links`` field; the form has no ``[model]`` table, so an error
    there is shown at ``kind``."""
    if exc.field == "model" or exc.field.startswith("model."):
        return "kind"
    field = exc.field.split(".")[-1] if exc.field.startswith("limits.") else exc.field
    return field.split(".")[0].split("[")[0]


async def _page(
    web: Web,
    request: Request,
    *,
    code: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    release_values: dict[str, str] | None = None,
    release_errors: dict[str, str] | None = None,
) -> Response:
    accounts = await _accounts(web)
    return web.render(
        request,
        "publish.html",
        code=code,
        title="Publish",
        accounts=accounts,
        account_options=[(n, n) for n in accounts],
        kinds=KINDS,
        values=values or {"kind": "agent", "price": "0", "royalty_bps": "0"},
        errors=errors or {},
        release_values=release_values or {},
        release_errors=release_errors or {},
        max_upload=web.max_upload,
    )


async def publish_form(web: Web, request: Request) -> Response:
    values = None
    name = request.query_params.get("name", "")
    account = request.query_params.get("account", "default")
    accounts = await _accounts(web)
    if name and account in accounts and len(name) <= 64:
        # Editing: start from the listing as it is.
        try:
            shown = (await web.api.registry.show(accounts[account], name)).model_dump()
        except MercatoError:  # a listing that is not there yet: an empty form
            shown = None
        if shown is not None:
            values = {**_form_values(shown), "account": account}
    return await _page(web, request, values=values)


async def publish(web: Web, request: Request) -> Response:
    form = await web.form(request)
    listing, errors = _listing_from(form)
    account = _text(form, "account")
    accounts = await _accounts(web)
    if account not in accounts:
        errors["account"] = "choose one of this node's accounts"
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "_csrf"}
    if not errors:
        try:
            shown = await web.api.registry.publish(account, listing)
        except SchemaError as exc:
            errors[_schema_field(exc)] = str(exc).split(": ", 1)[-1]
        else:
            published = shown.model_dump()
            return redirect(f"/market/{published['publisher']}/{published['name']}?published=1")
    return await _page(web, request, code=400, values=values, errors=errors)


def _dependencies(text: str) -> tuple[dict[str, str], str | None]:
    deps: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        ref, sep, rng = line.partition("=")
        if not sep:
            return {}, f"write each as publisher/name = range, got {line.strip()[:60]!r}"
        deps[ref.strip()] = rng.strip()
    return deps, None


async def _save(upload: UploadFile) -> Path:
    """The upload in a file of its own (the release reads a path), off the loop."""
    fd, name = await trio.to_thread.run_sync(
        lambda: tempfile.mkstemp(prefix="mercato-upload-", suffix=".wasm")
    )
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await upload.read(UPLOAD_CHUNK):
                await trio.to_thread.run_sync(out.write, chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(name)  # no await here: this runs while being cancelled too
        raise
    return path


async def release(web: Web, request: Request) -> Response:
    form = await web.form(request)
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != "_csrf"}
    errors: dict[str, str] = {}
    account, name, version = _text(form, "account"), _text(form, "name"), _text(form, "version")
    accounts = await _accounts(web)
    if account not in accounts:
        errors["account"] = "choose one of this node's accounts"
    deps, problem = _dependencies(_text(form, "dependencies"))
    if problem:
        errors["dependencies"] = problem
    fields = {"name": name, "version": version, "dependencies": deps}
    try:  # the registry's own checks, before anything is stored
        validate_release({**fields, "cid": "placeholder", "size": 1})
    except SchemaError as exc:
        errors.setdefault(exc.field.split(".")[0], str(exc).split(": ", 1)[-1])
    build = form.get("build")
    if not isinstance(build, UploadFile) or not build.filename or not build.size:
        errors["build"] = "choose the build file (.wasm) to release"
    if not errors and account in accounts:
        try:
            await web.api.registry.show(accounts[account], name)
        except MercatoError:
            errors["name"] = f"account {account} has no listing {name!r}: publish it first"
    if errors:
        return await _page(web, request, code=400, release_values=values, release_errors=errors)
    assert isinstance(build, UploadFile)
    path = await _save(build)
    publisher = accounts[account]

    async def work(job: Job) -> dict[str, Any]:
        try:
            await web.api.registry.release(account, fields, path, progress=job.step)
        finally:
            await trio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))
        return {"listing": f"/market/{publisher}/{name}", "release": f"{name}@{version}"}

    job = web.jobs.start("release", f"Release {name}@{version}", work)
    job.step(f"received {build.filename} ({build.size} bytes)")
    return redirect(f"/jobs/{job.id}")


PAGES = (
    ("/publish", publish_form, ["GET"]),
    ("/publish", publish, ["POST"]),
    ("/publish/release", release, ["POST"]),
)
