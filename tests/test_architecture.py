"""The boundaries ARCHITECTURE.md draws, checked on the source."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["p2p", "crdt", "runtime", "settlement", "bootstrap", "node", "cli"]
# What each package may import from the others (ARCHITECTURE.md).
ALLOWED = {
    "p2p": set(),
    "crdt": {"p2p"},
    "runtime": {"p2p"},
    "settlement": {"p2p"},
    "bootstrap": {"p2p"},
    "node": {"p2p", "crdt", "runtime", "settlement"},
    "cli": {"node"},
}


def imports_of(package: str) -> list[tuple[Path, str]]:
    """(file, imported module or module.name) for every absolute import in a package."""
    found = []
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [(path, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found += [(path, f"{node.module}.{alias.name}") for alias in node.names]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imports_of(package)
        if module.split(".")[0] in PACKAGES
        and module.split(".")[0] != package
        and module.split(".")[0] not in ALLOWED[package]
    ]
    assert not bad


@pytest.mark.parametrize("package", PACKAGES)
def test_other_packages_use_only_the_public_surface(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in imports_of(package)
        if module.split(".")[0] in PACKAGES
        and module.split(".")[0] != package
        and any(
            part.startswith("_") and not part.startswith("__") for part in module.split(".")[1:]
        )
    ]
    assert not bad


@pytest.mark.parametrize("package", PACKAGES)
def test_exports_resolve_and_packages_say_what_they_own(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__ and len(module.__doc__.strip()) > 40
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"
