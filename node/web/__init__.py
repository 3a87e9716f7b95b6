"""web: the node's own web app, served by the daemon under ``/`` on the control
API's address.

`WebApp` is one ASGI app: server-rendered pages (Jinja2 templates in
``templates/``), one script and one stylesheet from ``static/``, live updates
over server-sent events. It reaches the node only through the `NodeAPI`
facade, like the HTTP routes and the MCP server. `mercato ui` asks the daemon
for a one-time login link (``POST /v1/ui/login``); the link becomes a session
cookie. See ``_app.py`` for who may see what.

May import control (for the facade's types and error table) and every part
below node; nothing imports it but the composition root.
"""

from ._app import WebApp as WebApp
from ._session import LINK_TTL_S as LINK_TTL_S

__all__ = ["LINK_TTL_S", "WebApp"]
