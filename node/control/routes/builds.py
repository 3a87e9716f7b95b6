"""Routes of the build store and of fetches."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from .. import _models as m
from ._common import API, errors

router = APIRouter(tags=["builds"])


@router.get(
    "/v1/builds",
    response_model=m.Builds,
    responses=errors(),
    summary="Builds stored on this node, and the store's use of its quota.",
)
async def builds_list(api: API) -> m.Builds:
    return await api.builds.stored()


@router.post(
    "/v1/builds/add",
    response_model=m.Build,
    responses=errors(507, body=True),
    summary="Store a local file as a build (pinned unless pin is false).",
)
async def add(api: API, body: m.AddBody) -> m.Build:
    return await api.builds.add(Path(body.path), body.pin)


@router.post(
    "/v1/builds/fetch",
    status_code=202,
    response_model=m.Fetch,
    responses=errors(502, 507, body=True),
    summary="Start fetching a build from peers (all connected ones, or those given).",
)
async def fetch(api: API, body: m.FetchBody) -> m.Fetch:
    return await api.builds.fetch(body.cid, body.peers, body.pin)


@router.post(
    "/v1/builds/gc",
    response_model=m.Collected,
    responses=errors(),
    summary="Remove every build that is not pinned.",
)
async def gc(api: API) -> m.Collected:
    return await api.builds.gc()


@router.get(
    "/v1/builds/{cid}",
    response_model=m.BuildProgress,
    responses=errors(400, 404),
    summary="A build's record and the progress of its fetch.",
)
async def progress(api: API, cid: str) -> m.BuildProgress:
    return await api.builds.progress(cid)


@router.post(
    "/v1/builds/{cid}/pin",
    response_model=m.Pinned,
    responses=errors(400, 404),
    summary="Keep a build whatever gc does.",
)
async def pin(api: API, cid: str) -> m.Pinned:
    return await api.builds.pin(cid, True)


@router.post(
    "/v1/builds/{cid}/unpin",
    response_model=m.Pinned,
    responses=errors(400, 404),
    summary="Let gc remove a build.",
)
async def unpin(api: API, cid: str) -> m.Pinned:
    return await api.builds.pin(cid, False)


@router.post(
    "/v1/builds/{cid}/verify",
    response_model=m.Verified,
    responses=errors(400, 404),
    summary="Hash a build's chunks again; forget damaged ones.",
)
async def verify(api: API, cid: str) -> m.Verified:
    return await api.builds.verify(cid)
