"""What every router shares: reaching the facade, and documenting errors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from .. import _models as m
from .._api import NodeAPI

REASONS = {
    400: "Bad request: the message names the field or value",
    401: "Missing or wrong API token",
    403: "Refused by this node's [spending] limits (over_task_limit, daily_limit, "
    "approval_needed), or a licence is needed (licence_required, licence_refused)",
    404: "Not found",
    409: "Conflicts with the node's state",
    413: "Request body too large",
    500: "A bug: see the daemon's log",
    502: "A peer or the ledger refused, or could not be reached",
    503: "Busy or unavailable: retry later",
    507: "The build store is full",
}


def errors(*statuses: int, body: bool = False) -> dict[int | str, dict[str, Any]]:
    """The error answers a route documents: those given, plus 401 (every route
    but health needs the token), 413 when it takes a body, and 500."""
    codes = {*statuses, 401, 500} | ({413, 400} if body else set())
    return {code: {"model": m.ErrorBody, "description": REASONS[code]} for code in sorted(codes)}


def _facade(request: Request) -> NodeAPI:
    api: NodeAPI = request.app.state.api
    return api


API = Annotated[NodeAPI, Depends(_facade)]
