"""The boundaries ARCHITECTURE.md draws, checked on the source."""

import ast
import importlib
import re
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
    "cli": {"node", "bootstrap"},
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


# Inside node/: its domains are subpackages; what each may import of the others.
NODE_PARTS = {
    "registry": set(),
    "builds": set(),
    "money": set(),
    "commerce": {"registry", "money"},
    "tasks": {"builds", "registry", "money", "commerce"},
    "models": {"registry", "money", "tasks"},
    "control": {"builds", "registry", "money", "commerce", "tasks", "models"},
    "gateway": {"money", "tasks"},
    "mcp": {"control"},
    "web": {"control"},
}
NODE_COMPOSITION = {"__init__.py", "_node.py", "_schema.py", "_init.py"}
"""The composition root and the offline entry points: they may import every part."""


def node_part_imports() -> list[tuple[Path, str, str]]:
    """(file, the node part it is in or "core", the module it imports, relative to
    node/) for every relative import between node's modules."""
    found = []
    node_root = ROOT / "node"
    for path in _python_files("node"):
        rel = path.relative_to(node_root)
        package = list(rel.parts[:-1])  # the file's package, below node/
        part = package[0] if package else "core"
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or node.level == 0:
                continue
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.append((path, part, ".".join([*base, *node.module.split(".")])))
            else:
                found += [(path, part, ".".join([*base, a.name])) for a in node.names]
    return found


def test_node_parts_import_each_other_one_way_and_only_by_their_surface() -> None:
    checked = node_part_imports()
    bad = []
    for path, part, module in checked:
        head = module.split(".")[0]
        if (
            head not in NODE_PARTS
            or head == part
            or (path.name in NODE_COMPOSITION and part == "core")
        ):
            continue
        allowed = NODE_PARTS.get(part, set())
        if head not in allowed:
            bad.append(f"{path.relative_to(ROOT)} ({part}) imports node.{module}")
        elif any(p.startswith("_") for p in module.split(".")[1:]):
            bad.append(f"{path.relative_to(ROOT)} imports node.{module}, not its surface")
    assert not bad
    assert any(part == "tasks" and m.startswith("builds") for _, part, m in checked)


def test_the_error_tree_drawn_on_mercato_error_names_every_exported_error() -> None:
    import mercato

    drawing = mercato.MercatoError.__doc__ or ""
    modules = [f"mercato.{p}" for p in PACKAGES] + [f"mercato.node.{part}" for part in NODE_PARTS]
    missing = set()
    for name in modules:
        module = importlib.import_module(name)
        for export in getattr(module, "__all__", []):
            value = getattr(module, export)
            is_error = isinstance(value, type) and issubclass(value, mercato.MercatoError)
            if is_error and not re.search(rf"\b{value.__name__}\b", drawing):
                missing.add(f"{name}.{export}")
    assert not missing
