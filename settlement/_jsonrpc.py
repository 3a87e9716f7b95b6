"""JSON-RPC 2.0, as the localnet's HTTP and WebSocket endpoints read it: the
standard error codes, the refusal that carries one, and the checks of a
request's envelope (id, version, method, params) both endpoints make."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL = -32603

M = TypeVar("M")


class Refused(Exception):
    """A request refused with a JSON-RPC error ``code`` (and optional ``data``)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.message, self.data = code, message, data


def request_id(request: Any) -> Any:
    """The id of one request object; Refused (-32600) if it is not one."""
    if not isinstance(request, dict):
        raise Refused(INVALID_REQUEST, "Invalid request")
    found = request.get("id")
    if not isinstance(found, int | str | None) or isinstance(found, bool):
        raise Refused(INVALID_REQUEST, "Invalid request: id must be a number or a string")
    return found


def method_and_params(request: dict[str, Any], methods: Mapping[str, M]) -> tuple[M, list[Any]]:
    """The method a request names, from ``methods``, and its params (an array;
    none given is an empty one). Refused with the standard code otherwise."""
    if request.get("jsonrpc") != "2.0":
        raise Refused(INVALID_REQUEST, 'Invalid request: "jsonrpc" must be "2.0"')
    name = request.get("method")
    method = methods.get(name) if isinstance(name, str) else None
    if method is None:
        raise Refused(METHOD_NOT_FOUND, "Method not found")
    params = request.get("params")
    if params is None:
        params = []
    if not isinstance(params, list):
        raise Refused(INVALID_PARAMS, "Invalid params: params must be an array")
    return method, params
