"""commerce: licences and subscriptions sold as tokens on the ledger, and refunds.

``_messages.py`` defines ``/mercato/sale/1.0.0`` (offer, buy, refund) and the
signed objects it carries; `CommerceService` is both sides of it (the creator's
node that co-signs and submits each sale, the buyer's node that builds and
signs its part); `Entitlements` is a provider's check of a task's licence
against the ledger; `LicenceBook` and `SalesBook` keep what was bought and
sold. The ledger primitives (the purchase transaction, reading and checking a
licence token, revocation) are in mercato.settlement.

Imports node's core modules, the registry and money subpackages,
mercato.settlement, mercato.crdt and mercato.p2p; never tasks or control.
"""

from ._entitlements import Entitled as Entitled
from ._entitlements import Entitlements as Entitlements
from ._entitlements import lowest_run_price as lowest_run_price
from ._entitlements import plans_text as plans_text
from ._entitlements import run_price as run_price
from ._errors import BadSignedObject as BadSignedObject
from ._errors import CommerceError as CommerceError
from ._errors import LicenceRefused as LicenceRefused
from ._errors import LicenceRequired as LicenceRequired
from ._errors import NoSeller as NoSeller
from ._errors import SaleRefused as SaleRefused
from ._errors import UnknownLicence as UnknownLicence
from ._messages import SALE as SALE
from ._messages import LicenceUse as LicenceUse
from ._messages import SaleRequest as SaleRequest
from ._messages import SaleResponse as SaleResponse
from ._service import CommerceService as CommerceService
from ._store import SCHEMA as SCHEMA
from ._store import LicenceBook as LicenceBook
from ._store import LicenceRow as LicenceRow
from ._store import SalesBook as SalesBook

__all__ = [
    "SALE",
    "SCHEMA",
    "BadSignedObject",
    "CommerceError",
    "CommerceService",
    "Entitled",
    "Entitlements",
    "LicenceBook",
    "LicenceRefused",
    "LicenceRequired",
    "LicenceRow",
    "LicenceUse",
    "NoSeller",
    "SaleRefused",
    "SaleRequest",
    "SaleResponse",
    "SalesBook",
    "UnknownLicence",
    "lowest_run_price",
    "plans_text",
    "run_price",
]
