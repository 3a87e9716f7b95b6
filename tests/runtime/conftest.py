from pathlib import Path

import pytest
from wasmtime import wat2wasm

MODULES = Path(__file__).parent / "modules"
EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"


def module(name: str) -> bytes:
    """One of the test modules, compiled from its WAT source."""
    return wat2wasm((MODULES / f"{name}.wat").read_text())


def example(name: str) -> Path:
    return EXAMPLES / name / f"{name}.wasm"


@pytest.fixture(scope="module")
def sandbox():
    from mercato.runtime import Sandbox

    box = Sandbox()
    yield box
    box.close()
