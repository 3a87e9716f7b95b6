"""Errors of the registry::

MercatoError                (mercato)
└── RegistryError
    ├── SchemaError         a listing or release field is wrong; names the field
    ├── VersionError        a version or version range does not parse
    ├── UpdateRejected      a signed update is forged, oversized, malformed or
    │   │                   would put invalid content into a feed
    │   └── Equivocation    its publisher signed two different histories (the
    │                       relaying peer is not to blame)
    ├── QueryError          a search has filters that make no sense
    ├── ReleaseExists       name@version is bound already: releases never change
    ├── DependencyConflict  no set of releases satisfies every version range
    └── ListingNotFound     the listing asked for is not in this node's registry
"""

from __future__ import annotations

from mercato import MercatoError


class RegistryError(MercatoError):
    """An error of the marketplace registry."""


class VersionError(RegistryError):
    """A semantic version or a version range is malformed."""


class SchemaError(RegistryError):
    """Content does not match the listing schema. ``field`` names the culprit."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"field {field!r}: {why}")
        self.field = field
        self.why = why


class UpdateRejected(RegistryError):
    """A signed feed update was refused; nothing was stored or applied."""


class Equivocation(UpdateRejected):
    """A validly signed update contradicts what the feed already holds: its publisher
    signed two different histories. Refused, but whoever relayed it is not to blame."""


class ReleaseExists(RegistryError):
    """``name@version`` is released already, bound to another build: a release is
    bound once, forever. ``same`` is True when the binding asked for is the one
    that exists (nothing to do)."""

    def __init__(self, key: str, cid: str, same: bool) -> None:
        super().__init__(
            f"{key} is already released, bound to {cid or 'no build'}; a released version is never "
            "rebound: release the new build as a new version"
        )
        self.key, self.cid, self.same = key, cid, same


class DependencyConflict(RegistryError):
    """No set of releases satisfies every range; the message says which listing and why."""


class QueryError(RegistryError):
    """A search was asked with filters that make no sense; the message says which."""


class ListingNotFound(RegistryError):
    """The listing asked for is not in this node's registry (not yet synced, or none)."""
