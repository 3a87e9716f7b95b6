"""`mercato exec`: a creator tries a build locally, in the providers' sandbox."""

import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from wasmtime import wat2wasm

from mercato.crdt import validate_listing

from ..conftest import run_cli

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "runtime" / "examples"


def test_exec_prints_the_output_and_the_outcome(tmp_path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("one two three\n")
    result = run_cli("exec", str(EXAMPLES / "wordcount" / "wordcount.wasm"), "--input", str(text))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bytes": 14, "lines": 1, "words": 3, "longest_word": 5}
    assert result.stderr.startswith("ok: fuel ")


def test_exec_json_and_a_failing_run(tmp_path) -> None:
    loop = tmp_path / "loop.wasm"
    loop.write_bytes(wat2wasm('(module (func (export "_start") (loop (br 0))))'))
    result = run_cli("exec", str(loop), "--fuel", "1000000", "--json", input_text="")
    assert result.returncode == 1
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "out_of_fuel" and answer["usage"]["fuel"] == 1_000_000


def test_exec_refuses_what_cannot_run(tmp_path) -> None:
    assert run_cli("exec", str(tmp_path / "missing.wasm")).returncode == 2
    text = tmp_path / "notes.txt"
    text.write_text("not a module")
    refused = run_cli("exec", str(text), input_text="")
    assert refused.returncode == 1 and "not a WebAssembly module" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert run_cli("exec", str(text), "--memory", "0").returncode == 2


@pytest.mark.parametrize("name", ["echo", "wordcount", "json-upper"])
def test_each_example_has_a_valid_manifest(name: str) -> None:
    manifest = tomllib.loads((EXAMPLES / name / "MANIFEST.toml").read_text())
    assert validate_listing(manifest).name == name


@pytest.mark.skipif(shutil.which("clang") is None, reason="clang and wasi-libc are not installed")
def test_the_committed_examples_are_what_the_script_builds(tmp_path) -> None:
    subprocess.run([str(ROOT / "scripts" / "build_examples.sh"), str(tmp_path)], check=True)
    for built in tmp_path.glob("*.wasm"):
        assert built.read_bytes() == (EXAMPLES / built.stem / built.name).read_bytes(), built.name
