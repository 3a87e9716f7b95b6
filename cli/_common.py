"""What every command shares: the --data-dir option, error handling, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mercato.node import ControlError, DataDir, default_data_dir
from mercato.node import MercatoError as MercatoErrorBase

F = TypeVar("F", bound=Callable[..., Any])


def data_dir_option(fn: F) -> F:
    """``--data-dir PATH``, defaulting to $MERCATO_DATA_DIR or the platform's data dir."""
    return click.option(
        "--data-dir",
        "data_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="The node's data dir [env MERCATO_DATA_DIR; default: the platform's user data dir].",
    )(fn)


def resolve(data_dir: Path | None) -> DataDir:
    return DataDir((data_dir or default_data_dir()).expanduser().absolute())


def read_input(input_file: str | None) -> bytes:
    """The task input: ``--input FILE``'s bytes, or this command's stdin for ``-``.

    Without ``--input``, stdin when it is a pipe or a file, as any Unix filter
    reads it (``echo hi | mercato run …``); nothing when it is a terminal, where
    no one is about to type an input (or absent, as under some service managers).
    """
    if input_file is None:
        return b"" if stdin_is_terminal() else sys.stdin.buffer.read()
    if input_file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(input_file).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {input_file}: {exc}", param_hint="--input") from exc


def stdin_is_terminal() -> bool:
    """Whether stdin is a terminal, or missing altogether (then nothing to read)."""
    try:
        return sys.stdin is None or sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed, or replaced by an object with no fd
        return True


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


MALFORMED = frozenset(("bad_agent", "bad_body", "bad_peer", "bad_query", "bad_task"))
"""The control API's codes for a request with a malformed value (400): a value the
user typed that the CLI passes on as given, so a usage error (exit code 2)."""


class MercatoGroup(click.Group):
    """A click group that turns every error into one line on stderr, ``error: ...``:
    exit code 2 for a usage error (click's own, or a value the node found
    malformed), 1 for any other failure."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:  # the group's own options: `mercato --bogus`
            _usage_error(exc, info_name or "mercato")

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            _usage_error(exc, ctx.command_path)
        except click.ClickException as exc:
            fail(_sentence(exc.format_message()), exc.exit_code)
        except ControlError as exc:
            if exc.status == 400 and exc.code in MALFORMED:
                fail(str(exc), code=2)
            fail(str(exc))
        except MercatoErrorBase as exc:
            fail(str(exc))
        except BaseExceptionGroup as group:
            # Errors raised inside a trio nursery arrive wrapped in a group.
            ours, rest = group.split(MercatoErrorBase)
            if ours is None or rest is not None:
                raise
            fail("; ".join(str(e) for e in _leaves(ours)))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            fail(f"{exc.strerror or exc}{where}")


def _usage_error(exc: click.UsageError, command_path: str) -> NoReturn:
    where = exc.ctx.command_path if exc.ctx else command_path
    message = _sentence(exc.format_message())
    hint = "" if "(see `" in message else f" (see `{where} --help`)"
    fail(message + hint, code=2)


def _sentence(message: str) -> str:
    """Click's "Invalid value for 'X'." as our messages read: lower case first, no
    full stop (a hint follows)."""
    if len(message) > 1 and message[0].isupper() and message[1].islower():
        message = message[0].lower() + message[1:]
    return message if message.endswith("..") else message.removesuffix(".")


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def fail(message: str, code: int = 1) -> NoReturn:
    """Say ``error: message`` on stderr, once, and exit: 1, a failure; 2, a usage error."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
