"""What every command shares: the --data-dir option, error handling, output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from mercato.node import DataDir, default_data_dir
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
    """What ``--input FILE|-`` names: a file's bytes, this command's stdin, or nothing."""
    if input_file is None:
        return b""
    if input_file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(input_file).read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {input_file}: {exc}", param_hint="--input") from exc


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


class MercatoGroup(click.Group):
    """A click group that turns mercato's errors into one line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)
