"""The sandbox in-process: every limit ends a run with the right outcome, and nothing leaks in."""

import json

import pytest

from mercato.runtime import InputTooLarge, InvalidModule, Limits, LimitsError, Outcome, Sandbox

from .conftest import example, module

SMALL = Limits(fuel=50_000_000, timeout_s=2, memory_mb=16, max_output_bytes=100_000)


@pytest.mark.parametrize(
    "name, limits, outcome, detail",
    [
        ("loop", SMALL, Outcome.OUT_OF_FUEL, "fuel"),
        ("loop", Limits(fuel=10**13, timeout_s=0.2), Outcome.TIMEOUT, "0.2 s"),
        ("memory_bomb", SMALL, Outcome.MEMORY_LIMIT, "16 MB"),
        ("recursion", SMALL, Outcome.TRAP, "stack overflow"),
        ("huge_output", SMALL, Outcome.OUTPUT_TOO_LARGE, "100000 bytes"),
        ("trap", SMALL, Outcome.TRAP, "unreachable"),
        ("trap", Limits(memory_mb=1), Outcome.TRAP, "unreachable"),  # tiny limit, no growth
        ("start_loop", SMALL, Outcome.OUT_OF_FUEL, "fuel"),
        ("start_loop", Limits(fuel=10**13, timeout_s=0.2), Outcome.TIMEOUT, "0.2 s"),
        ("bad_segment", SMALL, Outcome.TRAP, "out-of-bounds"),
        ("big_table", SMALL, Outcome.MEMORY_LIMIT, "limit"),
    ],
)
def test_each_limit_ends_the_run_with_its_outcome(sandbox, name, limits, outcome, detail) -> None:
    result = sandbox.run(module(name), b"", limits)
    assert result.outcome is outcome, result
    assert detail in result.detail
    assert result.usage.wall_ms < limits.timeout_s * 1000 + 500
    if outcome is Outcome.OUT_OF_FUEL:
        assert result.usage.fuel == limits.fuel
    if outcome is Outcome.MEMORY_LIMIT:
        assert result.usage.peak_memory_bytes <= limits.memory_mb * 1024 * 1024
    if outcome is Outcome.OUTPUT_TOO_LARGE:
        assert len(result.output) <= limits.max_output_bytes
        assert result.usage.fuel < 1000  # stopped at the first refused write


def test_no_file_no_environment_no_arguments_reach_the_module(sandbox) -> None:
    result = sandbox.run(module("snoop"), b"", SMALL)
    assert result.outcome is Outcome.OK
    # errno 8 (EBADF): there is no preopened directory to open anything through
    assert result.output == b"open:008 env:000 args:001\n"


@pytest.mark.parametrize(
    "wasm, why",
    [
        (b"hello, not wasm", "not a WebAssembly module"),
        (b"\0asm\x01\0\0\0\xff\xff", "not a valid WebAssembly module"),
        (module("no_start"), "_start"),
        (module("foreign_import"), "env.open_socket"),
        (module("start_with_params"), "no parameters"),
    ],
)
def test_what_cannot_run_is_a_typed_error_and_no_run(sandbox, wasm, why) -> None:
    with pytest.raises(InvalidModule, match=why):
        sandbox.run(wasm, b"", SMALL)


def test_sleeping_in_the_host_is_refused(sandbox) -> None:
    result = sandbox.run(module("sleep"), b"", Limits(timeout_s=1))
    assert result.outcome is Outcome.OK and result.output == b"058"  # ENOTSUP, no 30 s nap
    assert result.usage.wall_ms < 1000


def test_input_and_limits_are_checked_before_running(sandbox) -> None:
    with pytest.raises(InputTooLarge):
        sandbox.run(module("echo"), b"x" * 11, Limits(max_input_bytes=10))
    with pytest.raises(LimitsError, match="memory_mb"):
        sandbox.run(module("echo"), b"", Limits(memory_mb=0))
    with pytest.raises(LimitsError, match="fuel"):
        sandbox.run(module("echo"), b"", Limits(fuel=1.5))  # type: ignore[arg-type]


def test_the_examples_do_what_their_readme_says(sandbox) -> None:
    def run(name: str, stdin: bytes):
        return sandbox.run(example(name).read_bytes(), stdin, Limits())

    assert run("echo", b"abc").output == b"abc"
    stats = run("wordcount", b"hello world\nsecond line here\n")
    assert json.loads(stats.output) == {"bytes": 29, "lines": 2, "words": 5, "longest_word": 6}
    upper = run("json-upper", b'{"name": "ada", "tags": ["x", "b"], "n": 1}\n')
    assert upper.output == b'{"name": "ADA", "tags": ["X", "B"], "n": 1}\n'
    bad = run("json-upper", b'{"a": "b')
    assert bad.outcome is Outcome.TRAP and bad.exit_code == 2 and b"unterminated" in bad.stderr
    big = b"word " * 200_000  # 1 MB: the default input limit
    assert json.loads(run("wordcount", big).output)["words"] == 200_000


def test_the_cache_saves_the_compile_and_survives_corruption(tmp_path) -> None:
    wasm = example("wordcount").read_bytes()
    first = Sandbox(tmp_path)
    assert first.run(wasm, b"a b", Limits()).ok
    assert (first.cache.hits, first.cache.misses) == (0, 1)
    first.close()
    second = Sandbox(tmp_path)  # a new process, as after a restart
    assert second.run(wasm, b"a b", Limits()).ok
    assert (second.cache.hits, second.cache.misses) == (1, 0)
    second.close()
    (entry,) = second.cache.dir.glob("*.cwasm")
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.write_bytes(bytes(data))
    third = Sandbox(tmp_path)
    assert json.loads(third.run(wasm, b"a b", Limits()).output)["words"] == 2
    assert (third.cache.hits, third.cache.misses) == (0, 1)  # detected, compiled again
    third.close()
    fourth = Sandbox(tmp_path)
    assert fourth.run(wasm, b"a b", Limits()).ok and fourth.cache.hits == 1  # rewritten
    fourth.close()
