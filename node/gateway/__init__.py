"""gateway: the public x402 gateway, where anyone pays for one run over plain HTTP.

An agent with an HTTP client and a Solana wallet (no mercato node) calls an
agent this node serves and pays for that one call: x402 version 2, scheme
``exact`` on the node's ledger, the node being both the resource server and
its own facilitator. ``_messages.py`` holds x402's wire shapes (the headers,
PaymentRequired, PaymentPayload, SettleResponse); `GatewayService`
(``_service.py``) prices, checks, runs (through `TaskService.run_here`),
settles and forwards creators' royalties; ``_book.py`` keeps payments (the
replay guard), the answers of calls whose settlement was pending, and forwards
in the node's SQLite file (node migrations 9 and 10);
`Gateway` (``_app.py``) serves it on a listener of its own, off by default
(``[gateway] listen``), never the control API's.

Imports node's core modules, the tasks and money subpackages,
mercato.settlement and mercato.p2p; never control.
"""

from ._app import Gateway as Gateway
from ._app import GatewayApp as GatewayApp
from ._book import RESULTS_SCHEMA as RESULTS_SCHEMA
from ._book import SCHEMA as SCHEMA
from ._messages import DEVNET as DEVNET
from ._messages import MAINNET as MAINNET
from ._messages import GatewayRefused as GatewayRefused
from ._service import GatewayService as GatewayService
from ._service import default_network as default_network

__all__ = [
    "DEVNET",
    "MAINNET",
    "RESULTS_SCHEMA",
    "SCHEMA",
    "Gateway",
    "GatewayApp",
    "GatewayRefused",
    "GatewayService",
    "default_network",
]
