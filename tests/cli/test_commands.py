"""The CLI's own contract: help with examples, version, exit codes."""

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
