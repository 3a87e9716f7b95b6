"""The limits of one run, and what a run used."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from ._errors import InputTooLarge, LimitsError

MIB = 1024 * 1024
BOUNDS: dict[str, tuple[float, float]] = {
    "fuel": (1, 10**13),
    "timeout_s": (0.001, 3600),
    "memory_mb": (1, 4096),
    "max_input_bytes": (0, 64 * MIB),
    "max_output_bytes": (1, 64 * MIB),
    "table_elements": (1, 100_000),  # 8 bytes each, in the worker's own memory
}


@dataclass(frozen=True)
class Limits:
    """What one run may use. The defaults are a listing's defaults."""

    fuel: int = 1_000_000_000
    """Units of wasmtime fuel, about one per WebAssembly instruction."""
    timeout_s: float = 10.0
    memory_mb: int = 64
    """Linear memory, in all, that the module may grow to."""
    max_input_bytes: int = MIB
    max_output_bytes: int = MIB
    table_elements: int = 10_000

    def check(self) -> Limits:
        """Self, or LimitsError naming the first limit out of bounds."""
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            kinds = (int, float) if name == "timeout_s" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise LimitsError(f"limit {name!r} must be a whole number")
            if not low <= value <= high:
                raise LimitsError(f"limit {name!r} must be between {low:g} and {high:g}")
        return self

    def admit(self, stdin: bytes) -> None:
        """Check the limits and the input against them before a run: LimitsError or
        InputTooLarge."""
        self.check()
        if len(stdin) > self.max_input_bytes:
            raise InputTooLarge(
                f"the input is {len(stdin)} bytes; this run takes at most {self.max_input_bytes}"
            )

    @classmethod
    def from_wire(cls, obj: Any) -> Limits:
        """From a mapping (a listing's ``limits``, a request); LimitsError if wrong."""
        if not isinstance(obj, dict) or set(obj) - set(BOUNDS):
            raise LimitsError(f"limits are a table of {', '.join(BOUNDS)}")
        return cls(**obj).check()

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)


class Outcome(enum.StrEnum):
    """How a run ended."""

    OK = "ok"
    """`_start` returned, or the module exited with status 0."""
    TRAP = "trap"
    """A WebAssembly trap, a stack overflow, or exit with a non-zero status."""
    OUT_OF_FUEL = "out_of_fuel"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    """The module needed more linear memory (or table) than its limit."""
    OUTPUT_TOO_LARGE = "output_too_large"
    CRASHED = "crashed"
    """The worker process running it died (a fault in the runtime, not the module)."""


@dataclass(frozen=True)
class Usage:
    fuel: int | None = 0
    """Fuel consumed; None after a timeout, when wasmtime does not report it."""
    wall_ms: float = 0.0
    peak_memory_bytes: int = 0


@dataclass(frozen=True)
class RunResult:
    outcome: Outcome
    output: bytes = b""
    """What the module wrote to stdout (cut at max_output_bytes)."""
    usage: Usage = field(default_factory=Usage)
    detail: str = ""
    """Why it ended, for people: the trap message, the exit status."""
    exit_code: int | None = None
    stderr: bytes = b""
    """The first bytes the module wrote to stderr (for the creator's debugging)."""
    refused: tuple[tuple[str, int, str], ...] = ()
    """Host calls the sandbox refused itself, never sent to the host: (op, status,
    message) of the first few (bad arguments, past ``max_calls``)."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    def to_wire(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "output": self.output,
            "usage": asdict(self.usage),
            "detail": self.detail,
            "exit_code": self.exit_code,
            "stderr": self.stderr,
            "refused": [list(r) for r in self.refused],
        }

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> RunResult:
        return cls(
            outcome=Outcome(obj["outcome"]),
            output=bytes(obj["output"]),
            usage=Usage(**obj["usage"]),
            detail=str(obj["detail"]),
            exit_code=obj["exit_code"],
            stderr=bytes(obj["stderr"]),
            refused=tuple(
                (str(op), int(status), str(message))
                for op, status, message in obj.get("refused", ())
            ),
        )
