"""Tasks: this node's task log with filters (role, agent, outcome, dates), and
one task with each side's receipt, the attempts before it, its verification,
price and wall time."""

from __future__ import annotations

import datetime
import json
import re
from typing import TYPE_CHECKING, Any

from mercato.runtime import Outcome

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from ._app import Web

SEARCHED = 1000  # the newest rows the filters look through
SHOWN = 200  # matching rows the page lists
MAX_AGENT_CHARS = 120
ROLES = (("", "Both"), ("user", "User: this node asked"), ("provider", "Provider: this node ran"))
STATUSES = (
    ("", "Any"),
    ("ok", "ok"),
    ("failed", "failed: no provider answered"),
    *[(o.value, o.value) for o in Outcome if o is not Outcome.OK],
)
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
DAY_S = 86_400


def _date(text: str) -> datetime.date | None:
    if not DATE.fullmatch(text):
        return None
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        return None


def _filters(request: Request) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """The filter form's values as sent, an error per wrong field, and the checked
    filters (role, agent, status, and the from/to bounds as unix times)."""
    params = request.query_params
    values = {
        name: params.get(name, "").strip()[:200]
        for name in ("role", "agent", "status", "from", "to")
    }
    errors: dict[str, str] = {}
    if values["role"] not in dict(ROLES):
        errors["role"] = "user, provider, or empty for both"
    if len(values["agent"]) > MAX_AGENT_CHARS:
        errors["agent"] = f"at most {MAX_AGENT_CHARS} characters"
    if values["status"] not in dict(STATUSES):
        errors["status"] = "one of the outcomes listed"
    bounds: dict[str, float | None] = {"from": None, "to": None}
    for name in ("from", "to"):
        if not values[name]:
            continue
        day = _date(values[name])
        if day is None:
            errors[name] = "a date as YYYY-MM-DD, such as 2026-01-31"
            continue
        start = datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()
        bounds[name] = start if name == "from" else start + DAY_S  # "to" takes in its whole day
    low, high = bounds["from"], bounds["to"]
    if low is not None and high is not None and high <= low:
        errors["to"] = "the same day as From or later"
    checked = {**values, "low": low, "high": high}
    return values, errors, checked


def _matches(task: dict[str, Any], checked: dict[str, Any]) -> bool:
    if checked["agent"] and checked["agent"].lower() not in task["agent"].lower():
        return False
    if checked["status"] and task["status"] != checked["status"]:
        return False
    if checked["low"] is not None and task["created"] < checked["low"]:
        return False
    return checked["high"] is None or task["created"] < checked["high"]


async def tasks(web: Web, request: Request) -> Response:
    values, errors, checked = _filters(request)
    found: list[dict[str, Any]] = []
    if not errors:
        log = await web.api.tasks.recent(SEARCHED, checked["role"] or None)
        found = [t for t in (s.model_dump() for s in log.tasks) if _matches(t, checked)]
    return web.render(
        request,
        "tasks.html",
        code=400 if errors else 200,
        title="Tasks",
        values=values,
        errors=errors,
        roles=ROLES,
        statuses=STATUSES,
        tasks=found[:SHOWN],
        matched=len(found),
        searched=SEARCHED,
        shown=SHOWN,
    )


def _side(side: dict[str, Any]) -> dict[str, Any]:
    """A side as the page shows it: its receipt as indented JSON text."""
    receipt = side.get("receipt")
    pretty = json.dumps(receipt, indent=2, sort_keys=True) if receipt is not None else ""
    return {**side, "receipt_text": pretty}


async def task(web: Web, request: Request) -> Response:
    task_id = request.path_params["task_id"][:64]
    shown = await web.api.tasks.show(task_id)  # 400 bad id, 404 unknown: the error page
    sides = [_side(s.model_dump()) for s in shown.sides]
    return web.render(
        request,
        "task.html",
        title=f"Task {shown.task[:8]}",
        task_id=shown.task,
        sides=sides,
    )


PAGES = (
    ("/tasks", tasks, ["GET"]),
    ("/tasks/{task_id}", task, ["GET"]),
)
