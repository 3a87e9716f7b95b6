"""The README's quick start stays true: two commands, and CI runs the test one."""

import re
import shlex
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:sh|bash)\n(.*?)```", section, re.S)
    return [
        line
        for block in blocks
        for line in block.strip().splitlines()
        if line and not line.startswith("#")
    ]


def test_quick_start_is_exactly_two_commands() -> None:
    assert len(quick_start_commands()) == 2


def test_ci_runs_the_readme_test_command() -> None:
    test_command = quick_start_commands()[1]
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def readme_commands() -> list[list[str]]:
    """Every `mercato ...` command in the README's shell blocks, as argument lists."""
    readme = (ROOT / "README.md").read_text()
    found = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            segment: list[str] = []
            for word in [*words, "|"]:
                if word in ("|", "&&", "&", ";"):
                    while segment and "=" in segment[0] and not segment[0].startswith("-"):
                        segment.pop(0)  # VAR=value before the command
                    if segment and segment[0].endswith("mercato"):
                        found.append(segment[1:])
                    segment = []
                else:
                    segment.append(word)
    return found


def test_every_mercato_command_the_readme_shows_parses() -> None:
    """Each command as shown names real subcommands, options and arguments (the
    demo, run by tests/test_scripts.py, shows the same commands working)."""
    from mercato.cli import main

    commands = readme_commands()
    assert len(commands) >= 25
    for args in commands:
        ctx = main.make_context("mercato", list(args))
        command: click.Command = main
        while isinstance(command, click.Group) and (rest := [*ctx._protected_args, *ctx.args]):
            name, sub, rest = command.resolve_command(ctx, rest)
            assert sub is not None, args
            ctx = sub.make_context(name or "", rest, parent=ctx)
            command = sub
        if isinstance(command, click.Group):  # a group alone must be a command itself
            assert command.invoke_without_command, f"no subcommand in {args}"
