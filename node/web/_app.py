"""`WebApp`: the node's web app, an ASGI app served under ``/`` on the control
API's address (the guard in ``control/_app.py`` hands it every path that is
not ``/v1``, ``/mcp``, ``/docs`` or ``/openapi.json``).

Who may see what: ``/login`` (which exchanges a one-time code for a session
cookie), ``/static`` and ``/favicon.ico`` answer anyone; every other path
needs a live session: none gets the login explanation (401), a stale or forged
one a 403, both without data. Every POST must carry the session's CSRF token
(form field ``_csrf`` or header ``X-CSRF-Token``) and, if the browser sends
one, an ``Origin`` of this very address; otherwise 403 and nothing changes.
Pages are rendered on the server (Jinja2, autoescaped: listing text is never
markup); the one script and the one stylesheet are files of this package, and
the Content-Security-Policy lets the browser load nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import trio
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from mercato import MercatoError

from ._format import FILTERS
from ._jobs import Jobs
from ._session import COOKIE, LINK_TTL_S, Session, Sessions

if TYPE_CHECKING:
    from ..control import NodeAPI

log = logging.getLogger("mercato.web")

HERE = Path(__file__).parent
STATIC = HERE / "static"
OPEN_PREFIXES = ("/static/",)
OPEN_PATHS = frozenset({"/login", "/favicon.ico"})
MAX_FORM_FIELDS = 64
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # same-origin: a form post carries its real Origin (no-referrer sends "null");
    # no other site ever sees a page address (a sign-in link holds its code).
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}

NAV = (
    ("/", "Network"),
    ("/market", "Marketplace"),
    ("/publish", "Publish"),
    ("/run", "Run"),
    ("/tasks", "Tasks"),
    ("/wallet", "Wallet"),
    ("/analytics", "Analytics"),
    ("/node", "Node"),
)


class Forbidden(Exception):
    """A request the session or CSRF check refuses: 403, nothing changed."""


Handler = Callable[["Web", Request], Awaitable[Response]]


class Web:
    """What every page handler gets: the facade, the sessions, the jobs, rendering."""

    def __init__(self, api: NodeAPI, max_upload: int) -> None:
        self.api = api
        self.max_upload = max_upload
        self.sessions = Sessions()
        self.jobs = Jobs()
        self.state: dict[str, Any] = {}
        """What pages keep between requests (a run waiting for its confirmation)."""
        self.closing = trio.Event()
        """Set when the daemon stops: live streams end."""
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(FILTERS)

    def session(self, request: Request) -> Session:
        session: Session = request.scope["mercato.session"]
        return session

    def render(self, request: Request, name: str, code: int = 200, **context: Any) -> Response:
        session = request.scope.get("mercato.session")
        html = self.env.get_template(name).render(
            nav=NAV,
            path=request.url.path,
            csrf=session.csrf if session else "",
            **context,
        )
        return HTMLResponse(html, status_code=code)

    async def form(self, request: Request) -> FormData:
        """The POSTed form, once its CSRF token is checked (Forbidden otherwise)."""
        form = await request.form(max_files=4, max_fields=MAX_FORM_FIELDS)
        token = request.headers.get("x-csrf-token") or form.get("_csrf")
        if not isinstance(token, str) or not self.session(request).csrf_ok(token):
            raise Forbidden("the form's security token is missing or stale: reload the page")
        return form

    def fail(self, request: Request, exc: MercatoError, status: int | None = None) -> Response:
        """An error page for a refusal of the node's, with its status."""
        from ..control import ERRORS

        code = status or _status_of(exc, ERRORS)
        return self.render(request, "error.html", code=code, title="Error", message=str(exc))


def _status_of(exc: MercatoError, table: Any) -> int:
    for kind in type(exc).__mro__:
        if kind in table:
            status: int = table[kind][0]
            return status
    status = getattr(exc, "status", 500)
    return status if isinstance(status, int) else 500


class WebApp:
    """The ASGI app: session and CSRF gate, security headers, the pages."""

    def __init__(self, api: NodeAPI, *, max_upload: int) -> None:
        from . import _pages

        self.web = Web(api, max_upload)
        routes = [
            Route("/login", self._login, methods=["GET"]),
            Route("/logout", self._logout, methods=["POST"]),
            Route("/favicon.ico", _favicon, methods=["GET"]),
            Route("/static/{name:path}", _static, methods=["GET"]),
        ]
        for path, handler, methods in _pages.PAGES:
            routes.append(Route(path, self._page(handler), methods=methods))
        self._router = Router(routes=routes, default=self._not_found)

    @property
    def sessions(self) -> Sessions:
        return self.web.sessions

    async def run(self, *, task_status: Any = None) -> None:
        """Run the jobs' nursery until `close`."""
        from trio import TASK_STATUS_IGNORED

        await self.web.jobs.run(task_status=task_status or TASK_STATUS_IGNORED)

    def close(self) -> None:
        self.web.closing.set()
        self.web.jobs.close()

    link_ttl_s = LINK_TTL_S

    def login_code(self) -> str:
        return self.web.sessions.new_code()

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def page(request: Request) -> Response:
            try:
                return await handler(self.web, request)
            except Forbidden as exc:
                return self.web.render(
                    request, "error.html", code=403, title="Refused", message=str(exc)
                )
            except MercatoError as exc:
                return self.web.fail(request, exc)

        return page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in have:
                        headers.append((name.encode(), value.encode()))
                took = (time.perf_counter() - started) * 1000
                headers.append((b"server-timing", f"app;dur={took:.2f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        started_answer = False

        async def tracked(message: Any) -> None:
            nonlocal started_answer
            started_answer = started_answer or message["type"] == "http.response.start"
            await with_headers(message)

        try:
            await self._dispatch(scope, receive, tracked)
        except Exception:
            # A page's bug costs one answer, never the server; the log has it.
            log.exception("web page failed", extra={"path": scope["path"]})
            if started_answer:
                raise
            answer = self.web.render(
                Request(scope),
                "error.html",
                code=500,
                title="Error",
                message="Something went wrong on this node; its log says what.",
            )
            await answer(scope, receive, with_headers)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            await self._router(scope, receive, send)
            return
        refusal = self._gate(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self._router(scope, receive, send)

    def _gate(self, request: Request) -> Response | None:
        """None if the request may go on; else the answer that refuses it."""
        cookie = request.cookies.get(COOKIE)
        if cookie is None:
            return self.web.render(request, "login.html", code=401, title="Sign in")
        session = self.web.sessions.get(cookie)
        if session is None:
            return self.web.render(request, "login.html", code=403, title="Sign in", stale=True)
        request.scope["mercato.session"] = session
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            host = request.headers.get("host", "")
            if origin is not None and origin.split("://", 1)[-1] != host:
                return self.web.render(
                    request,
                    "error.html",
                    code=403,
                    title="Refused",
                    message="this form was sent from another site; nothing was changed",
                )
        return None

    async def _login(self, request: Request) -> Response:
        code = request.query_params.get("code", "")
        session = self.web.sessions.exchange(code) if 0 < len(code) <= 200 else None
        if session is None:
            return self.web.render(request, "login.html", code=403, title="Sign in", used=True)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/")
        return answer

    async def _logout(self, request: Request) -> Response:
        cookie = request.cookies.get(COOKIE)
        session = self.web.sessions.get(cookie) if cookie else None
        if session is not None:
            request.scope["mercato.session"] = session
            await self.web.form(request)
            self.web.sessions.end(session.id)
        answer = RedirectResponse("/login", status_code=303)
        answer.delete_cookie(COOKIE, path="/")
        return answer

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        answer = self.web.render(
            request, "error.html", code=404, title="Not found", message="There is no such page."
        )
        await answer(scope, receive, send)


async def _favicon(request: Request) -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    path = (STATIC / name).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    answer = FileResponse(path)
    answer.headers["cache-control"] = "max-age=3600"
    return answer


def redirect(url: str) -> Response:
    return RedirectResponse(url, status_code=303)
