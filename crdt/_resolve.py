"""Dependency resolution: which releases satisfy a listing's version range, with their dependencies.

A release may depend on other listings by semver range (``"publisher/name" =
"^1.2.0"``). `resolve` picks one release per listing so that every range that
any chosen release places on a listing holds, preferring the newest version of
each, and backtracking when a newer choice leads to a conflict. When no
choice works it raises `DependencyConflict` naming the listing and the ranges
that cannot all hold, and who asked for each.

The search is bounded (`MAX_WORK` version checks, `MAX_PLAN` listings) so a
hostile or tangled graph costs a bounded amount of work; past the bound it is a
conflict that says the search gave up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ._errors import DependencyConflict, ListingNotFound, VersionError
from ._schema import Release
from ._semver import Version, VersionRange

MAX_WORK = 200_000  # version checks against ranges, in all
MAX_PLAN = 200  # listings in one plan; also bounds the recursion (two frames each)

ReleasesOf = Callable[[str], "list[Release] | None"]
"""Given "publisher/name", its releases (None if the listing is unknown here)."""


@dataclass(frozen=True)
class Requirement:
    range: VersionRange
    by: str  # "publisher/name@version" that asked, or "you"

    def __str__(self) -> str:
        return f"{self.range} (required by {self.by})"


@dataclass(frozen=True)
class Resolution:
    ref: str
    """The listing asked for, "publisher/name"."""
    candidates: list[str]
    """Its versions in the range, newest first, whatever their dependencies."""
    plan: dict[str, Release]
    """One release per listing: the one asked for and everything it needs."""


def resolve(releases_of: ReleasesOf, ref: str, range_text: str = "*") -> Resolution:
    """Resolve ``ref`` within ``range_text``; DependencyConflict if nothing fits,
    ListingNotFound if ``ref`` is unknown.

    VersionError if ``range_text`` is not a range. Pure and blocking; the work
    is bounded by `MAX_WORK` and `MAX_PLAN`.
    """
    wanted = VersionRange.parse(range_text)
    own = releases_of(ref)
    if own is None:
        raise ListingNotFound(f"{ref} is not a listing this node knows")
    candidates = sorted(
        (Version.parse(r.version) for r in own if wanted.matches(Version.parse(r.version))),
        reverse=True,
    )
    if not candidates:
        known = ", ".join(sorted((r.version for r in own), key=Version.parse)) or "none"
        raise DependencyConflict(f"no release of {ref} matches {wanted} (releases: {known})")
    solver = _Solver(releases_of)
    plan = solver.solve({}, {ref: [Requirement(wanted, "you")]}, [ref])
    if plan is None:
        raise DependencyConflict(solver.conflict or f"cannot resolve {ref} {wanted}")
    return Resolution(ref, [str(v) for v in candidates], plan)


class _Solver:
    """Depth-first search over one choice per listing. Recursion goes one level per
    listing chosen (at most MAX_PLAN); every version compared against a range counts
    against MAX_WORK, so a hostile graph costs bounded time."""

    def __init__(self, releases_of: ReleasesOf) -> None:
        self._releases_of = releases_of
        self._cache: dict[str, dict[Version, Release] | None] = {}
        self.work = 0
        self.conflict: str | None = None
        self.gave_up = False

    def _releases(self, ref: str) -> dict[Version, Release] | None:
        if ref not in self._cache:
            found = self._releases_of(ref)
            self._cache[ref] = (
                None if found is None else {Version.parse(r.version): r for r in found}
            )
        return self._cache[ref]

    def _fail(self, why: str) -> None:
        if self.conflict is None:  # the first failure is under the most preferred choices
            self.conflict = why

    def _spend(self, amount: int) -> bool:
        """Count work; False (and a conflict that says so) once the budget is gone."""
        self.work += amount
        if self.work > MAX_WORK and not self.gave_up:
            self.gave_up = True
            self.conflict = (
                f"gave up: the dependencies allow too many combinations to try "
                f"(more than {MAX_WORK} version checks); narrow the range"
            )
        return not self.gave_up

    def solve(
        self,
        chosen: dict[str, Release],
        needs: dict[str, list[Requirement]],
        todo: list[str],
    ) -> dict[str, Release] | None:
        todo = [ref for ref in todo if ref not in chosen]
        if not todo:
            return chosen
        ref, rest = todo[0], todo[1:]
        releases = self._releases(ref)
        if releases is None:
            self._fail(f"{ref} is needed by {needs[ref][0].by} but this node does not know it")
            return None
        if not self._spend(len(releases) * len(needs[ref])):
            return None
        fitting = sorted(
            (v for v in releases if all(req.range.matches(v) for req in needs[ref])),
            reverse=True,
        )
        if not fitting:
            ranges = " and ".join(str(req) for req in needs[ref])
            self._fail(f"no release of {ref} satisfies {ranges}")
            return None
        for version in fitting:
            if not self._spend(1):
                return None
            plan = self._try(chosen, needs, rest, ref, releases[version])
            if plan is not None or self.gave_up:
                return plan
        return None

    def _try(
        self,
        chosen: dict[str, Release],
        needs: dict[str, list[Requirement]],
        rest: list[str],
        ref: str,
        release: Release,
    ) -> dict[str, Release] | None:
        me = f"{ref}@{release.version}"
        if len(chosen) >= MAX_PLAN:
            self._fail(f"{me} needs more than {MAX_PLAN} listings in all")
            return None
        more_needs = {k: list(v) for k, v in needs.items()}
        more_todo = list(rest)
        for dep, text in sorted(release.dependencies.items()):
            try:
                requirement = Requirement(VersionRange.parse(text), me)
            except VersionError:
                self._fail(f"{me} has an unreadable range for {dep}: {text!r}")
                return None
            mine = Version.parse(release.version) if dep == ref else None
            held = mine or (Version.parse(chosen[dep].version) if dep in chosen else None)
            if held is not None and not requirement.range.matches(held):
                if dep == ref:
                    self._fail(f"{me} requires {ref} {text}, which excludes itself")
                else:
                    ranges = " and ".join(str(r) for r in [*more_needs[dep], requirement])
                    self._fail(f"no release of {dep} satisfies {ranges}")
                return None
            more_needs.setdefault(dep, []).append(requirement)
            if held is None and dep not in more_todo:
                more_todo.append(dep)
        return self.solve({**chosen, ref: release}, more_needs, more_todo)
