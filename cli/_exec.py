from __future__ import annotations

import base64
import sys
from pathlib import Path

import click

from mercato.node import Limits, run_build

from ._common import data_dir_option, print_json, read_input, resolve

DEFAULTS = Limits()


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"


@click.command("exec")
@data_dir_option
@click.argument("wasm", metavar="FILE.wasm", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--input",
    "input_file",
    metavar="FILE|-",
    help="The task input (stdin of the module): a file, or - for this command's stdin.",
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

    The module's stdout is printed; its outcome and what it used (fuel, time,
    memory) go to stderr. Exits 0 if the run ended ok, 1 otherwise. Try a build
    this way before you publish it.

    \b
    Example:
      mercato exec wordcount.wasm --input README.md
      echo '{"a": "b"}' | mercato exec json-upper.wasm --input - --json
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
        fuel_text = f"fuel {usage.fuel:,}" if usage.fuel is not None else "fuel unknown"
        summary = (
            f"{result.outcome.value}: {fuel_text}, {usage.wall_ms:.1f} ms, "
            f"memory {_size(usage.peak_memory_bytes)}"
        )
        click.echo(summary + (f" ({result.detail})" if result.detail else ""), err=True)
    if not result.ok:
        sys.exit(1)
