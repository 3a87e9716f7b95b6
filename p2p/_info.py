"""``/mercato/info/1.0.0``: ask a peer who it is and what it runs.

Flow: the client sends `InfoRequest`; the server answers `InfoResponse` with
its agent string (``mercato/<version>``), its listen addresses and roles.
It is the smallest user of the request/response framework, and the first
thing `mercato peers --info` asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ._messages import Message
from ._requests import RequestProtocol


@dataclass(frozen=True)
class InfoRequest(Message):
    TYPE: ClassVar[str] = "info.request"


@dataclass(frozen=True)
class InfoResponse(Message):
    TYPE: ClassVar[str] = "info.response"
    agent: str = field(metadata={"max_len": 128})
    listen_addrs: list[str] = field(metadata={"max_len": 32, "item_max_len": 256})
    roles: list[str] = field(metadata={"max_len": 16, "item_max_len": 32})


INFO = RequestProtocol(
    "/mercato/info/1.0.0",
    InfoRequest,
    InfoResponse,
    max_request_bytes=256,
    max_response_bytes=16 * 1024,
    timeout_s=5.0,
)
