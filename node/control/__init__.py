"""control: the node's control surface, for the CLI, scripts and agents.

`NodeAPI` is the one typed facade of every operation of a running node, with a
sub-API per domain (node, registry, builds, runtime, tasks, money, commerce).
The HTTP control API (`build_app`: FastAPI routes, one router per area, behind a guard
for the token and body limits) calls it; its bodies are the pydantic models of
``_models.py`` and its errors map to (status, code) in the one table of
``_errors.py``. `ControlClient` calls the same operations over HTTP, blocking,
for the CLI. `LocalControl` runs the operations that need no daemon (keys, the
event log) on a data dir directly; `open_control` gives whichever applies.

May import every other part of node; nothing in node imports it but the
composition root (node/_node.py) and the offline entry points.
"""

from ._api import NodeAPI as NodeAPI
from ._app import build_app as build_app
from ._client import ControlClient as ControlClient
from ._errors import ERRORS as ERRORS
from ._local import Control as Control
from ._local import LocalControl as LocalControl
from ._local import open_control as open_control

__all__ = [
    "ERRORS",
    "Control",
    "ControlClient",
    "LocalControl",
    "NodeAPI",
    "build_app",
    "open_control",
]
