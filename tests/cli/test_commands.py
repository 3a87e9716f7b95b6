"""The CLI's own contract: help with examples, version, exit codes."""

import click
import pytest
from click.testing import CliRunner

from mercato.cli import main
from mercato.node import __version__

from ..conftest import run_cli


def all_commands(group=main, prefix=()):
    yield prefix
    for name, cmd in getattr(group, "commands", {}).items():
        yield from all_commands(cmd, (*prefix, name))


@pytest.mark.parametrize("path", list(all_commands()), ids=lambda p: " ".join(p) or "mercato")
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example" in result.output, f"`mercato {' '.join(path)} --help` shows no example"
    lines = result.output.splitlines()
    example = next(i for i, line in enumerate(lines) if "Example" in line)
    assert lines[example].strip() == "Example:", "the example was rewrapped into prose"
    assert "\\b" not in result.output


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mercato {__version__}"


def test_usage_errors_exit_2() -> None:
    assert run_cli("keys", "new").returncode == 2
    assert run_cli("no-such-command").returncode == 2
    assert run_cli("node", "start", "--api-port", "70000").returncode == 2


NO_DATA = {
    ("node", "start"): "runs the daemon in the foreground; its log is not data",
    ("node", "stop"): "stops the daemon",
    ("node", "relay-files"): "writes files into a directory",
    ("localnet",): "serves a ledger in the foreground",
    ("mcp",): "speaks MCP on stdout",
}


@pytest.mark.parametrize("path", list(all_commands()), ids=lambda p: " ".join(p) or "mercato")
def test_every_command_that_prints_data_takes_json(path: tuple[str, ...]) -> None:
    command = main
    for name in path:
        command = command.commands[name]
    if isinstance(command, click.Group) and not command.invoke_without_command:
        return  # a group only lists its commands
    options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    if path in NO_DATA:
        assert "--json" not in options, f"{' '.join(path)} has --json now: drop it from NO_DATA"
    else:
        assert "--json" in options, f"`mercato {' '.join(path)}` prints data but has no --json"
