"""Routes of the node itself: health, identity, status, keys, events, peers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from .. import _models as m
from ._common import API, errors

router = APIRouter(tags=["node"])


@router.get("/v1/health", response_model=m.Health, summary="Liveness: answers without a token.")
async def health(api: API) -> m.Health:
    return api.node.health()


@router.get("/v1/node", response_model=m.NodeInfo, responses=errors(), summary="Who this node is.")
async def info(api: API) -> m.NodeInfo:
    return api.node.info()


@router.get(
    "/v1/status",
    response_model=m.Status,
    responses=errors(),
    summary="The node's identity, services, addresses and counters.",
)
async def status(api: API) -> m.Status:
    return await api.node.status()


@router.post(
    "/v1/ui/login",
    response_model=m.UiLogin,
    responses=errors(503),
    summary="A one-time link that signs a browser in to the node's web app (`mercato ui`).",
)
async def ui_login(api: API) -> m.UiLogin:
    return api.node.ui_login()


@router.post(
    "/v1/shutdown",
    status_code=202,
    response_model=m.Stopping,
    responses=errors(),
    summary="Stop the daemon cleanly.",
)
async def shutdown(api: API) -> m.Stopping:
    return api.node.shutdown()


@router.get(
    "/v1/keys",
    response_model=m.Keys,
    responses=errors(),
    summary="The node key and every account key (public parts only).",
)
async def keys_list(api: API) -> m.Keys:
    return await api.node.keys_list()


@router.post(
    "/v1/keys",
    status_code=201,
    response_model=m.Key,
    responses=errors(409, body=True),
    summary="Create a new account key.",
)
async def keys_new(api: API, body: m.KeyName) -> m.Key:
    return await api.node.keys_new(body.name)


@router.get(
    "/v1/keys/{name:path}",
    response_model=m.Key,
    responses=errors(400, 404),
    summary="One key ('node' or an account name).",
)
async def keys_show(api: API, name: Annotated[str, Path(max_length=64)]) -> m.Key:
    return await api.node.keys_show(name)


@router.get(
    "/v1/events",
    response_model=m.Events,
    responses=errors(400),
    summary="Event log entries after a sequence number, oldest first.",
)
async def events(
    api: API,
    after: Annotated[int, Query(description="entries with seq > after")] = 0,
    limit: Annotated[int, Query(description="at most this many (1-1000)")] = 100,
    kind: Annotated[str | None, Query(max_length=64, description="only this kind")] = None,
) -> m.Events:
    return await api.node.events(after, limit, kind)


@router.get(
    "/v1/events/verify",
    response_model=m.EventsCheck,
    responses=errors(),
    summary="Check the event log's hash chain.",
)
async def events_verify(api: API) -> m.EventsCheck:
    return await api.node.events_verify()


@router.get(
    "/v1/peers",
    response_model=m.Peers,
    responses=errors(),
    summary="Connected peers with their addresses and protocols, and banned peers.",
)
async def peers(api: API) -> m.Peers:
    return api.node.peers()


@router.post(
    "/v1/peers/connect",
    response_model=m.Connected,
    responses=errors(502, body=True),
    summary="Dial a peer by multiaddr.",
)
async def connect(api: API, body: m.PeerArg) -> m.Connected:
    return await api.node.connect(body.peer)


@router.post(
    "/v1/ping",
    response_model=m.Pong,
    responses=errors(502, body=True),
    summary="Ping a peer (by peer id, or by multiaddr, dialing it first).",
)
async def ping(api: API, body: m.PeerArg) -> m.Pong:
    return await api.node.ping(body.peer)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses=errors(),
    summary="Prometheus metrics (text exposition format).",
)
async def metrics(api: API) -> PlainTextResponse:
    return PlainTextResponse(
        await api.node.metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
