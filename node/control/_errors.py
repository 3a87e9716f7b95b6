"""The one table from errors to answers: (HTTP status, error code).

Looked up along the error's class hierarchy, most specific first, so a new
subclass answers like its parent until it gets a row of its own. A
`ControlError` raised by the facade carries its own status and code. Anything
not in the table is a bug: 500 ``internal``, logged with its traceback.
"""

from __future__ import annotations

from mercato.crdt import (
    DependencyConflict,
    ListingNotFound,
    QueryError,
    RegistryError,
    ReleaseExists,
    SchemaError,
)
from mercato.p2p import P2PError, RemoteError
from mercato.runtime import InputTooLarge, InvalidModule, LimitsError
from mercato.settlement import ChannelError, LedgerError, LedgerUnreachable, LockupInForce

from .._errors import ControlError, KeyExists, KeyNotFound, KeyStoreError, NotServed, StoreFull
from ..builds import BuildError, QuotaExceeded, UnknownBuild
from ..commerce import (
    BadSignedObject,
    CommerceError,
    LicenceRefused,
    LicenceRequired,
    NoSeller,
    SaleRefused,
    UnknownLicence,
)
from ..models import BadModelRequest, ModelError, NoModel
from ..tasks import KeyReused, NoProof, TaskError, TaskRefused, UnknownAgent

ERRORS: dict[type[Exception], tuple[int, str]] = {
    KeyExists: (409, "key_exists"),
    KeyNotFound: (404, "no_such_key"),
    KeyStoreError: (400, "bad_key"),
    StoreFull: (507, "no_space"),
    SchemaError: (400, "invalid_listing"),
    ListingNotFound: (404, "no_such_listing"),
    DependencyConflict: (409, "conflict"),
    ReleaseExists: (409, "release_exists"),
    QueryError: (400, "bad_query"),
    RegistryError: (400, "bad_request"),
    UnknownBuild: (404, "no_such_build"),
    QuotaExceeded: (507, "no_space"),
    BuildError: (400, "bad_build"),
    InvalidModule: (400, "invalid_module"),
    InputTooLarge: (400, "input_too_large"),
    LimitsError: (400, "bad_limits"),
    LicenceRequired: (403, "licence_required"),
    LicenceRefused: (403, "licence_refused"),
    UnknownLicence: (404, "no_such_licence"),
    NoSeller: (503, "seller_offline"),
    SaleRefused: (409, "sale_refused"),
    BadSignedObject: (400, "bad_request"),
    CommerceError: (400, "commerce"),
    UnknownAgent: (404, "unknown_agent"),
    NoModel: (404, "model_not_found"),
    BadModelRequest: (400, "invalid_request"),
    ModelError: (502, "provider_error"),
    TaskRefused: (400, "task_refused"),
    KeyReused: (409, "idempotency_conflict"),
    NoProof: (409, "no_proof"),
    TaskError: (502, "task_failed"),
    LockupInForce: (409, "lockup_in_force"),
    LedgerUnreachable: (503, "ledger_unreachable"),
    LedgerError: (502, "ledger_refused"),
    ChannelError: (409, "bad_channel"),
    NotServed: (409, "not_served"),
    RemoteError: (502, "refused"),
    P2PError: (502, "unreachable"),
}


def answer_for(exc: Exception) -> tuple[int, str] | None:
    """(status, code) for an error, or None if it is not one the API expects."""
    if isinstance(exc, ControlError):
        return exc.status, exc.code
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return None
