"""The relay's deployment files run what they say: the systemd unit's command
starts a relay, the container runs the same command, the install script parses."""

import json
import re
import shlex
import subprocess
from pathlib import Path

from mercato.node import DataDir

from ..conftest import run_cli

BOOTSTRAP = Path(__file__).parents[2] / "bootstrap"


def unit_command() -> list[str]:
    unit = (BOOTSTRAP / "mercato-relay.service").read_text()
    (line,) = re.findall(r"^ExecStart=(.+)$", unit, re.MULTILINE)
    return shlex.split(line)


def test_the_unit_and_the_container_run_the_same_relay_command() -> None:
    command = unit_command()
    assert command[0].endswith("/mercato") and command[1:4] == ["node", "start", "--role"]
    entry = re.search(r"^ENTRYPOINT (\[.+\])$", (BOOTSTRAP / "Containerfile").read_text(), re.M)
    container = json.loads(entry[1])
    at = command.index("--data-dir")
    assert container[1:] == [*command[1 : at + 1], "/data", *command[at + 2 :]]


def test_the_install_script_is_valid_bash() -> None:
    checked = subprocess.run(["bash", "-n", str(BOOTSTRAP / "install.sh")], capture_output=True)
    assert checked.returncode == 0, checked.stderr


def test_the_units_command_starts_a_relay(tmp_path: Path, start_daemon) -> None:
    args = unit_command()[3:]  # after `mercato node start`
    args[args.index("--data-dir") + 1] = str(tmp_path / "relay")
    args[args.index("--listen") + 1] = "/ip4/127.0.0.1/tcp/0"
    datadir = DataDir(tmp_path / "relay")
    run_cli("init", "--data-dir", str(datadir.root))
    data_dir_at = args.index("--data-dir")
    del args[data_dir_at : data_dir_at + 2]
    start_daemon(datadir, *args)
    status = json.loads(run_cli("node", "status", "--json", "--data-dir", str(datadir.root)).stdout)
    assert status["role"] == "relay" and status["p2p"]["relay"]["hop"]
    assert not {"builds", "runtime", "settlement", "tasks"} & set(status["services"])
    assert {"p2p", "registry", "cards"} <= set(status["services"])
    shown = run_cli("node", "status", "--data-dir", str(datadir.root)).stdout
    assert "relaying for others" in shown
    refused = run_cli("wallet", "--data-dir", str(datadir.root))
    assert refused.returncode == 1 and "relay" in refused.stderr
