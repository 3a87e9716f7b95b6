"""Semantic versions (semver 2.0.0) and the version ranges dependencies use.

Ranges, as creators write them in a release's dependencies::

    1.2.3  =1.2.3     exactly that version
    ^1.2.3            >=1.2.3 <2.0.0   (^0.2.3: <0.3.0, ^0.0.3: <0.0.4)
    ~1.2.3            >=1.2.3 <1.3.0
    1.2.x  1.2  1.x   any patch / any minor
    *                 any version
    >=1.0.0 <2.0.0    comparators joined by spaces must all hold
    ^1.0.0 || ^2.0.0  alternatives

Pre-releases (``1.0.0-beta.1``) match a range only if one of its comparators
names a pre-release of the same major.minor.patch, as npm does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from ._errors import VersionError

# No build metadata ("+..."): it carries no precedence, so 1.0.0 and 1.0.0+b would
# be two releases of one version. ASCII digits only.
_VERSION = re.compile(
    r"(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?",
    re.ASCII,
)
MAX_RANGE_LEN = 256


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text) if isinstance(text, str) else None
        if not match:
            raise VersionError(f"{text!r} is not a semantic version like 1.4.2 or 2.0.0-rc.1")
        pre = tuple(match.group(4).split(".")) if match.group(4) else ()
        for part in pre:
            if part.isdigit() and len(part) > 1 and part.startswith("0"):
                raise VersionError(f"{text!r}: numeric pre-release parts have no leading zeros")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3)), pre)

    def core(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; numeric parts before alphanumeric.
        pre = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.prerelease)
        return (self.core(), not self.prerelease, pre)

    def __lt__(self, other: Version) -> bool:
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return text + (f"-{'.'.join(self.prerelease)}" if self.prerelease else "")


@dataclass(frozen=True)
class _Comparator:
    op: str  # one of < <= > >= =
    version: Version

    def holds(self, v: Version) -> bool:
        if self.op == "=":
            return v == self.version
        if self.op == "<":
            return v < self.version
        if self.op == "<=":
            return v <= self.version
        if self.op == ">":
            return v > self.version
        return v >= self.version


def _partial(text: str) -> tuple[list[int | None], tuple[str, ...]]:
    """``1``, ``1.2``, ``1.2.x``, ``1.2.3-rc.1`` as [major, minor, patch] with None for x."""
    core, _, pre = text.partition("-")
    parts = core.split(".")
    if not 1 <= len(parts) <= 3:
        raise ValueError(text)
    out: list[int | None] = []
    for part in parts:
        if part in ("x", "X", "*"):
            out.append(None)
        elif part.isdigit() and (part == "0" or not part.startswith("0")) and len(part) <= 9:
            out.append(int(part))
        else:
            raise ValueError(text)
    out += [None] * (3 - len(out))
    if None in out and any(v is not None for v in out[out.index(None) :]):
        raise ValueError(text)  # 1.x.3
    if pre and None in out:
        raise ValueError(text)
    return out, tuple(pre.split(".")) if pre else ()


def _version(parts: list[int], prerelease: tuple[str, ...] = ()) -> Version:
    major, minor, patch = parts
    return Version(major, minor, patch, prerelease)


def _bump(parts: list[int], at: int) -> Version:
    bumped = parts[:at] + [parts[at] + 1] + [0] * (2 - at)
    return _version(bumped, prerelease=("0",))  # below every release of that number


def _expand(term: str) -> list[_Comparator]:
    """One space-separated term of a range as plain comparators."""
    for op in (">=", "<=", ">", "<", "="):
        if term.startswith(op):
            return [_Comparator(op, _full(term[len(op) :]))]
    if term in ("*", "x", "X"):
        return []
    if term[0] in "^~":
        nums, pre = _partial(term[1:])
        fixed = [n if n is not None else 0 for n in nums]
        low = _Comparator(">=", _version(fixed, prerelease=pre))
        known = len([n for n in nums if n is not None])
        if term[0] == "~":
            at = 1 if known >= 2 else 0
        else:  # caret: first non-zero part among those given
            at = next((i for i, n in enumerate(fixed[:known]) if n != 0), max(known - 1, 0))
            if known < 3 and all(n == 0 for n in fixed[:known]):
                at = known - 1 if known else 0
        return [low, _Comparator("<", _bump(fixed, at))]
    nums, pre = _partial(term)
    fixed = [n if n is not None else 0 for n in nums]
    if None not in nums:
        return [_Comparator("=", _version(fixed, prerelease=pre))]
    known = nums.index(None)
    if known == 0:
        return []
    return [_Comparator(">=", _version(fixed)), _Comparator("<", _bump(fixed, known - 1))]


def _full(text: str) -> Version:
    nums, pre = _partial(text)
    return _version([n if n is not None else 0 for n in nums], prerelease=pre)


@dataclass(frozen=True)
class VersionRange:
    text: str
    alternatives: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_RANGE_LEN:
            raise VersionError(f"{text!r} is not a version range like ^1.2.0 or >=1.0.0 <2.0.0")
        alternatives = []
        try:
            for alternative in text.split("||"):
                terms = alternative.split()
                if not terms:
                    raise ValueError(text)
                alternatives.append(tuple(c for t in terms for c in _expand(t)))
        except (ValueError, VersionError) as exc:
            raise VersionError(
                f"{text!r} is not a version range like ^1.2.0, ~1.4, 2.x or >=1.0.0 <2.0.0"
            ) from exc
        return cls(text.strip(), tuple(alternatives))

    def matches(self, version: Version) -> bool:
        return any(self._holds(comparators, version) for comparators in self.alternatives)

    @staticmethod
    def _holds(comparators: tuple[_Comparator, ...], v: Version) -> bool:
        if not all(c.holds(v) for c in comparators):
            return False
        if not v.prerelease:
            return True
        # A pre-release needs a comparator naming a pre-release of the same version.
        return any(c.version.prerelease and c.version.core() == v.core() for c in comparators)

    def best(self, versions: list[Version]) -> Version | None:
        """The highest of ``versions`` in this range, or None."""
        matching = [v for v in versions if self.matches(v)]
        return max(matching) if matching else None

    def __str__(self) -> str:
        return self.text
