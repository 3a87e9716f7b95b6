"""What the distribution installs: one import name, every module, the deploy files."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
PARTS = ["bootstrap", "cli", "crdt", "node", "p2p", "runtime", "settlement"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("mercato-*.whl")
    return zipfile.ZipFile(path)


@pytest.mark.slow
def test_the_wheel_installs_one_top_level_name(wheel: zipfile.ZipFile) -> None:
    tops = {name.split("/")[0] for name in wheel.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"mercato"}
    (top_level,) = [n for n in wheel.namelist() if n.endswith(".dist-info/top_level.txt")]
    assert wheel.read(top_level).decode().split() == ["mercato"]


@pytest.mark.slow
def test_the_wheel_holds_every_module_and_the_deploy_files(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    expected = {"mercato/__init__.py"} | {
        f"mercato/{path.relative_to(ROOT).as_posix()}"
        for part in PARTS
        for path in (ROOT / part).rglob("*.py")
    }
    assert expected - names == set(), "modules left out of the wheel (pyproject's packages)"
    for deploy in ("mercato-relay.service", "Containerfile", "install.sh"):
        assert f"mercato/bootstrap/{deploy}" in names


def test_relay_files_writes_the_installed_deploy_files(tmp_path: Path) -> None:
    done = run_cli("node", "relay-files", str(tmp_path / "relay"))
    assert done.returncode == 0, done.stderr
    for name in ("mercato-relay.service", "Containerfile", "install.sh"):
        assert (tmp_path / "relay" / name).read_bytes() == (ROOT / "bootstrap" / name).read_bytes()
    again = run_cli("node", "relay-files", str(tmp_path / "relay"))
    assert again.returncode == 1 and "already exist" in again.stderr
