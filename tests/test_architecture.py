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
    "runtime": set(),
    "settlement": set(),
    "bootstrap": set(),  # deployment files only
    "node": {"p2p", "crdt", "runtime", "settlement"},
    "cli": {"node"},
}
SOURCE_DIRS = [*PACKAGES, "tests", "scripts"]


def _python_files(folder: str) -> list[Path]:
    return [p for p in (ROOT / folder).rglob("*.py") if ".venv" not in p.parts]


def absolute_imports(path: Path) -> list[str]:
    """Every absolute import in a file, as ``module`` or ``module.name``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def imports_of(package: str) -> list[tuple[Path, str]]:
    """(file, module inside mercato without the prefix) for every import of a
    mercato module from a package's files: ``mercato.node._x`` becomes ``node._x``."""
    found = []
    for path in _python_files(package):
        for module in absolute_imports(path):
            if module.startswith("mercato."):
                found.append((path, module.removeprefix("mercato.")))
    return found


def test_code_imports_mercato_only_by_its_one_name() -> None:
    bare = [
        f"{path.relative_to(ROOT)} imports {module}"
        for folder in SOURCE_DIRS
        for path in _python_files(folder)
        for module in absolute_imports(path)
        if module.split(".")[0] in PACKAGES
    ]
    assert not bare, "import these as mercato.<part>: " + "; ".join(bare)


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    checked = imports_of(package)
    bad = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path, module in checked
        if module.split(".")[0] in PACKAGES
        and module.split(".")[0] != package
        and module.split(".")[0] not in ALLOWED[package]
    ]
    assert not bad
    if ALLOWED[package]:  # a checker that saw no import would pass anything
        assert any(module.split(".")[0] in ALLOWED[package] for _, module in checked)


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
    module = importlib.import_module(f"mercato.{package}")
    assert module.__doc__ and len(module.__doc__.strip()) > 40
    for name in module.__all__:
        assert hasattr(module, name), f"mercato.{package}.__all__ names missing {name}"
