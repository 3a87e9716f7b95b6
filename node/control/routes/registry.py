"""Routes of the marketplace registry."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Query

from mercato.crdt import Query as RegistryQuery

from .. import _models as m
from ._common import API, errors

router = APIRouter(tags=["registry"])
PEER = Query(max_length=512, description="ask this peer (peer id or multiaddr), not this node")


@router.post(
    "/v1/registry/publish",
    response_model=m.Listing,
    responses=errors(404, 409, body=True),
    summary="Create or update a listing, signed by one of this node's account keys.",
)
async def publish(api: API, body: m.PublishBody) -> m.Listing:
    return await api.registry.publish(body.account, body.listing)


@router.post(
    "/v1/registry/release",
    response_model=m.Released,
    responses=errors(404, 409, 507, body=True),
    summary="Bind name@version of a listing to a build (a cid, or a file spread to its peers).",
)
async def release(api: API, body: m.ReleaseBody) -> m.Released:
    build = FilePath(body.build) if body.build is not None else None
    return await api.registry.release(body.account, body.release, build)


@router.get(
    "/v1/registry/release",
    response_model=m.ReleaseProgress,
    responses=errors(400),
    summary="How a release under way on this node is going (its build's copies, bytes sent).",
)
async def releasing(
    api: API,
    name: Annotated[str, Query(max_length=64)],
    version: Annotated[str, Query(max_length=64)],
    account: Annotated[str, Query(max_length=64)] = "default",
) -> m.ReleaseProgress:
    return api.registry.releasing(account, name, version)


@router.post(
    "/v1/registry/deprecate",
    response_model=m.Listing,
    responses=errors(404, body=True),
    summary="Mark a listing deprecated (it leaves search results).",
)
async def deprecate(api: API, body: m.DeprecateBody) -> m.Listing:
    return await api.registry.deprecate(body.account, body.name)


@router.get(
    "/v1/registry/search",
    response_model=m.SearchPage,
    responses=errors(400, 502),
    summary="Search listings: text, filters, sort, cursor pagination.",
)
async def search(
    api: API,
    text: Annotated[str, Query(max_length=512, description="words, each a prefix")] = "",
    kind: Annotated[str | None, Query(max_length=16, description="agent or model")] = None,
    capability: Annotated[str | None, Query(max_length=128)] = None,
    tag: Annotated[str | None, Query(max_length=128)] = None,
    max_price: Annotated[int | None, Query(gt=-(2**62), lt=2**62, description="lamports")] = None,
    publisher: Annotated[str | None, Query(max_length=64)] = None,
    sort: Annotated[str, Query(max_length=16, description="relevance, price or newest")] = (
        "relevance"
    ),
    limit: Annotated[int, Query(gt=0, lt=2**31, description="1-100")] = 20,
    cursor: Annotated[str | None, Query(max_length=512, description="from the last page")] = None,
    peer: Annotated[str | None, PEER] = None,
) -> m.SearchPage:
    query = RegistryQuery(
        text=text,
        kind=kind,
        capability=capability,
        tag=tag,
        max_price=max_price,
        publisher=publisher,
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    return await api.registry.search(query, peer)


@router.get(
    "/v1/registry/digest",
    response_model=m.RegistryDigest,
    summary="A fingerprint of this node's registry: equal on nodes that hold the same updates.",
)
async def digest(api: API) -> m.RegistryDigest:
    return await api.registry.digest()


@router.get(
    "/v1/registry/resolve",
    response_model=m.Resolution,
    responses=errors(400, 404, 409),
    summary="Releases of a listing within a version range, with every dependency resolved.",
)
async def resolve(
    api: API,
    ref: Annotated[str, Query(max_length=200, description="PUBLISHER/NAME")] = "",
    range: Annotated[str, Query(max_length=200, description="a semver range (default *)")] = "*",
) -> m.Resolution:
    return await api.registry.resolve(ref, range)


@router.get(
    "/v1/registry/listings/{publisher}/{name}",
    response_model=m.Listing,
    responses=errors(404, 502),
    summary="One listing with its releases (from a peer: its signed feed, verified here).",
)
async def show(
    api: API, publisher: str, name: str, peer: Annotated[str | None, PEER] = None
) -> m.Listing:
    return await api.registry.show(publisher, name, peer)
