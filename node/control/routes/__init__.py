"""The control API's routes: one `APIRouter` per area, each route a thin adapter
of one `NodeAPI` operation (parse, call, return). No rules live here."""

from fastapi import APIRouter

from . import builds, commerce, models, money, registry, runtime, tasks
from . import node as node_routes

ROUTERS: tuple[APIRouter, ...] = (
    node_routes.router,
    registry.router,
    runtime.router,
    builds.router,
    tasks.router,
    money.router,
    commerce.router,
    models.router,
)

__all__ = ["ROUTERS"]
