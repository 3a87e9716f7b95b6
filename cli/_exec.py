from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from mercato.node import Limits, run_build

from ._common import data_dir_option, print_json, read_input, resolve
from ._format import size

DEFAULTS = Limits()


@click.command("exec")
@data_dir_option
@click.argument("wasm", metavar="FILE.wasm", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input",
    "input_file",
    metavar="FILE|-",
    help="The task input (stdin of the module): a file, or - for this command's stdin "
    "[default: stdin when it is a pipe or a file; no input on a terminal].",
)
@click.option(
    "--fuel",
    type=click.IntRange(1, 10**13),
    default=DEFAULTS.fuel,
    show_default=True,
    help="Fuel: about one unit per WebAssembly instruction.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0.001, 3600),
    default=DEFAULTS.timeout_s,
    show_default=True,
    help="Wall-clock limit, in seconds.",
)
@click.option(
    "--memory",
    "memory_mb",
    type=click.IntRange(1, 4096),
    default=DEFAULTS.memory_mb,
    show_default=True,
    help="Linear memory limit, in MB.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the outcome, usage and output as JSON."
)
def exec_command(
    data_dir: Path | None,
    wasm: Path,
    input_file: str | None,
    fuel: int,
    timeout_s: float,
    memory_mb: int,
    as_json: bool,
) -> None:
    """Run a WebAssembly build once, here, in the same sandbox providers use.

    The input is --input FILE, or this command's stdin when it is a pipe or a
    file. The module's stdout is printed; its stderr, then its outcome and what
    it used (fuel, time, memory) go to stderr (--json puts them all in one
    object on stdout). Exits 0 if the run ended ok, 1 otherwise. Try a build
    this way before you publish it.

    \b
    Example:
      mercato exec wordcount.wasm --input README.md
      echo '{"a": "b"}' | mercato exec json-upper.wasm --json
    """
    if not wasm.is_file():
        raise click.BadParameter(f"{wasm} does not exist", param_hint="FILE.wasm")
    stdin = read_input(input_file)
    limits = Limits(
        fuel=fuel,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        max_input_bytes=max(len(stdin), DEFAULTS.max_input_bytes),
    )
    result = run_build(wasm, stdin, limits, resolve(data_dir))
    usage = result.usage
    if as_json:
        wire = result.to_wire()
        try:
            wire["output"] = result.output.decode()
        except UnicodeDecodeError:
            wire["output"], wire["output_base64"] = None, base64.b64encode(result.output).decode()
        wire["stderr"] = result.stderr.decode(errors="replace")
        print_json(wire)
    else:
        sys.stdout.buffer.write(result.output)
        sys.stdout.flush()
        _show_stderr(result.stderr)
        fuel_text = f"fuel {usage.fuel:,}" if usage.fuel is not None else "fuel unknown"
        summary = (
            f"{result.outcome.value}: {fuel_text}, {usage.wall_ms:.1f} ms, "
            f"memory {size(usage.peak_memory_bytes)}"
        )
        click.echo(summary + (f" ({result.detail})" if result.detail else ""), err=True)
    if not result.ok:
        sys.exit(1)


def _show_stderr(stderr: bytes) -> None:
    """The module's own stderr, as it wrote it: a crashing module says why there."""
    if stderr:
        click.echo(stderr, err=True, nl=not stderr.endswith(b"\n"))
