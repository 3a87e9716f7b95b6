"""The control API as one ASGI app: FastAPI routes behind a guard.

The guard (`Guard`, plain ASGI, outermost) answers before any route runs: 401
without the bearer token (only health, the OpenAPI document and the docs are
open), 413 for a body over ``max_body`` (declared or sent), 408 for a body that
does not arrive within ``body_timeout``. It counts every request in the
metrics. Errors are ``{"error": {"code", "message"}}``: the facade's and the
services' through ``_errors.ERRORS``, malformed input as 400 naming the field,
unknown routes 404, wrong methods 405, anything else 500 with its traceback in
the log.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from pathlib import Path
from typing import Any

import fastapi_offline
import trio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mercato import MercatoError

from .._metrics import NodeMetrics
from .._version import __version__
from ._api import NodeAPI
from ._errors import answer_for
from .routes import ROUTERS

log = logging.getLogger("mercato.api")

DOCS_ASSETS = {
    "/docs/swagger-ui-bundle.js": "swagger-ui-bundle.js",
    "/docs/swagger-ui.css": "swagger-ui.css",
}
"""Swagger UI's files, from the fastapi-offline package: /docs needs no CDN."""
OPEN_PATHS = frozenset({"/v1/health", "/openapi.json", "/docs", *DOCS_ASSETS})
"""Routes that answer without the token: nothing in them is private."""
BODY_TIMEOUT_S = 30.0
MAX_HEAD_BYTES = 16 * 1024
_DRAIN_LIMIT = 8  # times max_body read and dropped after a 413, so the client sees it
_DRAIN_S = 1.0
API_PREFIXES = ("/v1/", "/docs/")


def error_body(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _send_error(
    send: Send, status: int, code: str, message: str, close: bool = False
) -> None:
    """``close``: the connection ends after it (a body was left unread: the next
    bytes on it are not a request)."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class Guard:
    """Token, body size and body time, checked before the app sees a request;
    and the request's metrics once it is answered."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        max_body: int,
        metrics: NodeMetrics,
        body_timeout: float = BODY_TIMEOUT_S,
        api_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.mcp: ASGIApp | None = None
        """What answers ``/mcp`` (the MCP server), once the node has set it."""
        self.web: ASGIApp | None = None
        """What answers every path outside the API (the web app), once set."""
        self.web_max_body = max_body
        self.api_paths = frozenset({"/v1", "/mcp", "/openapi.json", "/docs", *api_paths})
        """Paths the API answers outside ``/v1/`` (``/metrics``): never the web app's."""
        self._token = token.encode()
        self._max_body = max_body
        self._metrics = metrics
        self._body_timeout = body_timeout

    def _is_web(self, path: str) -> bool:
        """Everything outside the API is the web app's: ``/``, its pages, its files."""
        return (
            self.web is not None
            and path not in self.api_paths
            and not path.startswith(API_PREFIXES)
        )

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, given = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    given.strip(), self._token
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, counted)
        except Exception:
            # Starlette re-raises what it answered with 500 (`_internal` logged
            # it); a handler's bug costs one answer, never the server.
            if status["code"] != 500:
                raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            label = route or (scope["path"] if scope["path"] in OPEN_PATHS else "unmatched")
            if route is None and self._is_web(scope["path"]):
                label = "web"
            elapsed = time.perf_counter() - started
            self._metrics.api_requests.labels(route=label, status=str(status["code"])).inc()
            self._metrics.api_seconds.labels(route=label).observe(elapsed)
            log.debug(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status["code"],
                    "ms": round(elapsed * 1000, 2),
                },
            )

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        head = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        head += sum(len(name) + len(value) for name, value in scope["headers"])
        if head > MAX_HEAD_BYTES:
            message = f"request line and headers are limited to {MAX_HEAD_BYTES} bytes"
            await _send_error(send, 431, "headers_too_large", message)
            return
        web = self._is_web(scope["path"])
        if not web and scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            await _send_error(
                send,
                401,
                "unauthorized",
                "missing or wrong API token: send 'Authorization: Bearer <token>' "
                "with the token from <data dir>/api.token",
            )
            return
        try:
            limit = self.web_max_body if web else self._max_body
            with trio.fail_after(self._body_timeout):
                body = await self._read_body(scope, receive, limit)
        except _TooLarge:
            await self._drain(receive)
            message = f"request bodies are limited to {limit} bytes"
            await _send_error(send, 413, "body_too_large", message, close=True)
            return
        except trio.TooSlowError:
            await _send_error(
                send, 408, "timeout", "the request body took too long to arrive", close=True
            )
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, when the client goes

        if self.mcp is not None and scope["path"] == "/mcp":
            await self.mcp(scope, replay, send)
            return
        if web:
            assert self.web is not None
            await self.web(scope, replay, send)
            return
        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _drain(self, receive: Receive) -> None:
        """Read and drop what the client still sends, so it reads our 413, not a reset."""
        with trio.move_on_after(_DRAIN_S):
            seen = 0
            while seen < _DRAIN_LIMIT * self._max_body:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body"):
                    return
                seen += len(message.get("body", b""))


def _field(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc[1:]) or str(loc[0])


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    loc = tuple(first.get("loc", ("body",)))
    where = {"body": "bad_body", "query": "bad_query", "path": "bad_request"}.get(
        str(loc[0]), "bad_request"
    )
    if first.get("type") == "json_invalid":
        return error_body(400, "bad_json", "the request body is not valid JSON")
    field = _field(loc)
    what = f"field {field!r}" if len(loc) > 1 else f"the {loc[0]}"
    return error_body(400, where, f"{what}: {first.get('msg', 'invalid')}")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route {request.url.path}; see /openapi.json"
        return error_body(404, "not_found", message)
    if exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
        return error_body(405, "method_not_allowed", message)
    return error_body(exc.status_code, "bad_request", str(exc.detail))


async def _mercato_error(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc)
    if answer is None:
        return await _internal(request, exc)
    return error_body(answer[0], answer[1], str(exc))


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "control API handler failed",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"path": request.url.path},
    )
    return error_body(500, "internal", "internal error; see the daemon's log")


def build_app(api: NodeAPI, *, token: str, max_body: int, metrics: NodeMetrics) -> Guard:
    """The control API for one node: FastAPI routes under the guard."""
    app = FastAPI(
        title="mercato control API",
        version=__version__,
        summary="Everything a mercato node does, for the CLI, scripts and agents.",
        docs_url=None,
        redoc_url=None,
    )
    _serve_docs(app)
    app.state.api = api
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(MercatoError, _mercato_error)
    app.add_exception_handler(Exception, _internal)  # answers 500, then re-raises
    _document_security(app)
    paths = frozenset(getattr(r, "path", "") for router in ROUTERS for r in router.routes)
    return Guard(app, token=token, max_body=max_body, metrics=metrics, api_paths=paths)


def _serve_docs(app: FastAPI) -> None:
    """Swagger UI at /docs, its files served from the installed package."""
    assets = Path(fastapi_offline.__file__).parent / "static"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="mercato control API",
            swagger_js_url="/docs/swagger-ui-bundle.js",
            swagger_css_url="/docs/swagger-ui.css",
            swagger_favicon_url="data:,",
            swagger_ui_parameters={"tryItOutEnabled": True, "persistAuthorization": True},
        )

    app.add_api_route("/docs", docs, include_in_schema=False)
    for path, name in DOCS_ASSETS.items():

        async def asset(name: str = name) -> FileResponse:
            return FileResponse(assets / name)

        app.add_api_route(path, asset, include_in_schema=False)


def _document_security(app: FastAPI) -> None:
    """Say in the OpenAPI document that routes need the bearer token (health does not)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        doc = build()
        doc.setdefault("components", {})["securitySchemes"] = {
            "token": {"type": "http", "scheme": "bearer"}
        }
        doc["security"] = [{"token": []}]
        for path, ops in doc["paths"].items():
            for op in ops.values():
                if path in OPEN_PATHS:
                    op["security"] = []
                    op["responses"].pop("401", None)
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]
