"""Errors of the runtime::

MercatoError                (mercato)
└── SandboxError
    ├── InvalidModule       not WebAssembly, no WASI ``_start``, or it imports
    │                       something the sandbox does not offer
    ├── InputTooLarge       the task input is over the run's limit
    └── LimitsError         a limit is missing, zero or beyond what a node allows

Each means no run happened. A run that happened ends in a `RunResult` whose
outcome says how (ok, trap, out of fuel, ...), never in an exception.
"""

from __future__ import annotations

from mercato import MercatoError


class SandboxError(MercatoError):
    """An error of the WebAssembly runtime; no run happened."""


class InvalidModule(SandboxError):
    """The build is not a module this sandbox can run; the message says why."""


class InputTooLarge(SandboxError):
    """The task input is larger than the run's ``max_input_bytes``."""


class LimitsError(SandboxError):
    """A run limit is out of bounds; the message names it."""
