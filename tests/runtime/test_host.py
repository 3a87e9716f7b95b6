"""Host calls: an agent's way out (mercato.call, mercato.infer) reaches the daemon's
handler intact, is bounded in number and time, and nothing malformed gets through."""

import json

import pytest
import trio

from mercato.runtime import (
    HostCall,
    HostReply,
    HostStatus,
    InvalidModule,
    Limits,
    Outcome,
    open_worker_pool,
)

from .conftest import example, module

OK_REPLY = b"abcdefghijklmnopqrstuvwxyz0123"  # 30 bytes: more than host_call's 16-byte buffer
OK = HostReply(0, OK_REPLY)


def parse(output: bytes) -> tuple[int, bytes, bytes]:
    """host_call's output: the return code, what landed in its buffer, the last result."""
    code, written, last = output.split(b"\n", 2)
    return int(code), written, last


class Recorder:
    """A handler (the daemon's side) that records its calls and answers ``reply``."""

    def __init__(self, reply: HostReply = OK, delay: float = 0.0) -> None:
        self.calls: list[HostCall] = []
        self.reply = reply
        self.delay = delay

    async def __call__(self, call: HostCall) -> HostReply:
        self.calls.append(call)
        if self.delay:
            await trio.sleep(self.delay)  # a slow provider: the point of some tests
        return self.reply


async def test_a_call_reaches_the_handler_intact_and_its_result_comes_back() -> None:
    handler = Recorder()
    payload = bytes(range(256)) * 4
    async with open_worker_pool(1) as pool:
        result = await pool.run(
            module("host_call"), b"cpub/wordcount\n" + payload, Limits(), host=handler, max_calls=1
        )
        assert result.ok, result
        assert handler.calls == [HostCall("call", "pub/wordcount", payload)]
        # the full length, the first 16 bytes in the buffer, all of it through result()
        assert parse(result.output) == (30, OK_REPLY[:16], OK_REPLY)
        infer = await pool.run(
            module("host_call"), "isummarizer-é\n{}".encode(), Limits(), host=handler, max_calls=1
        )
        assert parse(infer.output)[0] == 30
        assert handler.calls[1] == HostCall("infer", "summarizer-é", b"{}")
        assert pool.host_calls == 2


async def test_a_failure_returns_its_status_and_its_message_is_readable() -> None:
    handler = Recorder(HostReply(HostStatus.UNDECLARED, b"wordcount is not a dependency"))
    async with open_worker_pool(1) as pool:
        result = await pool.run(module("host_call"), b"cx\n", Limits(), host=handler, max_calls=1)
    assert result.ok
    assert parse(result.output) == (-1, b"", b"wordcount is not a dependency")


async def test_bad_arguments_never_reach_the_handler() -> None:
    handler = Recorder()
    async with open_worker_pool(1) as pool:
        result = await pool.run(module("host_bad_args"), b"", Limits(), host=handler, max_calls=99)
        assert result.ok, result
        codes, message = result.output.split(b"\n")
        assert codes.split() == [b"-5"] * 10
        assert message == b"a pointer or length is outside memory"  # the last failure's
        no_memory = await pool.run(
            module("host_no_memory"), b"", Limits(), host=handler, max_calls=99
        )
        assert no_memory.ok, no_memory  # it got -5, no trap
    assert handler.calls == [] and pool.host_calls == 0


async def test_past_max_calls_the_worker_answers_too_many() -> None:
    handler = Recorder(HostReply(0, b""))
    async with open_worker_pool(1) as pool:
        result = await pool.run(module("host_loop"), b"", Limits(), host=handler, max_calls=3)
        assert result.ok and result.output == b"3 -4"
        assert len(handler.calls) == 3 and pool.host_calls == 3
        none = await pool.run(module("host_loop"), b"", Limits(), host=handler, max_calls=0)
        assert none.output == b"0 -4" and len(handler.calls) == 3


async def test_without_a_handler_every_call_is_no_host() -> None:
    async with open_worker_pool(1) as pool:
        result = await pool.run(module("host_call"), b"cx\nin", Limits(), max_calls=5)
    code, _, message = parse(result.output)
    assert result.ok and code == HostStatus.NO_HOST
    assert message == b"this sandbox has no way out: run it on a node"


async def test_a_handler_slower_than_the_run_ends_it_as_a_timeout_on_time() -> None:
    cancelled = trio.Event()

    async def forever(call: HostCall) -> HostReply:
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            cancelled.set()
            raise
        return HostReply()

    async with open_worker_pool(1) as pool:
        assert (await pool.run(module("echo"), b"warm", Limits())).ok  # compiled, started
        (pid,) = pool.worker_pids()
        before = trio.current_time()
        result = await pool.run(
            module("host_call"), b"cx\n", Limits(timeout_s=0.5), host=forever, max_calls=1
        )
        took = trio.current_time() - before
        assert result.outcome is Outcome.TIMEOUT, result
        assert 0.5 <= took < 1.3  # about the run's timeout, not the handler's 30 s
        assert cancelled.is_set()
        after = await pool.run(module("echo"), b"still here", Limits())
        assert after.output == b"still here" and pool.worker_pids() == [pid]  # not killed


async def test_a_handler_that_raises_gives_unavailable_and_the_run_goes_on(caplog) -> None:
    async def broken(call: HostCall) -> HostReply:
        raise RuntimeError("the daemon's bug")

    async def malformed(call: HostCall) -> HostReply:
        return HostReply(7, b"not a status")

    async with open_worker_pool(1) as pool:
        for handler in (broken, malformed):
            result = await pool.run(
                module("host_call"), b"cx\n", Limits(), host=handler, max_calls=1
            )
            assert result.ok and parse(result.output)[0] == HostStatus.UNAVAILABLE
    assert "a host handler failed" in caplog.text


async def test_waiting_in_a_handler_costs_no_fuel() -> None:
    async with open_worker_pool(1) as pool:
        quick = await pool.run(module("host_call"), b"cx\n", Limits(), host=Recorder(), max_calls=1)
        slow = await pool.run(
            module("host_call"), b"cx\n", Limits(), host=Recorder(delay=0.3), max_calls=1
        )
    assert quick.ok and slow.ok and slow.output == quick.output
    assert slow.usage.wall_ms >= 300
    assert slow.usage.fuel == quick.usage.fuel


@pytest.mark.parametrize(
    "name, why",
    [
        ("host_wrong_signature", "mercato.call with the wrong signature: see runtime/examples"),
        ("host_unknown", "mercato.other, which the sandbox does not offer"),
    ],
)
async def test_imports_beyond_the_host_functions_are_refused(name: str, why: str) -> None:
    async with open_worker_pool(1) as pool:
        with pytest.raises(InvalidModule, match=why):
            await pool.run(module(name), b"", Limits(), host=Recorder(), max_calls=1)
        with pytest.raises(InvalidModule, match=why):
            await pool.check(module(name))


async def test_cancelling_the_caller_while_a_handler_waits_kills_the_worker() -> None:
    entered = trio.Event()

    async def stuck(call: HostCall) -> HostReply:
        entered.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async with open_worker_pool(1) as pool:
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                await pool.run(module("host_call"), b"cx\n", Limits(), host=stuck, max_calls=1)
                raise AssertionError("the run should have been cancelled")

            nursery.start_soon(run)
            with trio.fail_after(10):
                await entered.wait()
            nursery.cancel_scope.cancel()
        assert pool.worker_pids() == [] and pool.busy == 0
        assert (await pool.run(module("echo"), b"next", Limits())).output == b"next"


def test_the_sandbox_takes_a_plain_host_function(sandbox) -> None:
    calls: list[HostCall] = []

    def host(call: HostCall) -> HostReply:
        calls.append(call)
        return HostReply(0, OK_REPLY)

    result = sandbox.run(module("host_call"), b"iqwen\n{}", Limits(), host=host, max_calls=1)
    assert parse(result.output) == (30, OK_REPLY[:16], OK_REPLY)
    assert calls == [HostCall("infer", "qwen", b"{}")]
    bare = sandbox.run(module("host_call"), b"iqwen\n{}", Limits())  # as mercato exec runs it
    assert parse(bare.output)[0] == HostStatus.NO_HOST and len(calls) == 1


WORDCOUNT = b'{"bytes": 29, "lines": 2, "words": 5, "longest_word": 6}\n'
SUMMARY = 'Two lines, one "quoted" word\nand a backslash \\ too'
COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": SUMMARY},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 16, "total_tokens": 56},
    }
).encode()
TEXT = b'hello "world"\nsecond line here\n'


async def test_the_digest_example_composes_a_call_and_a_model() -> None:
    seen: dict[str, HostCall] = {}

    async def node(call: HostCall) -> HostReply:
        seen[call.op] = call
        return HostReply(0, WORDCOUNT if call.op == "call" else COMPLETION)

    async with open_worker_pool(1) as pool:
        result = await pool.run(
            example("digest"), TEXT, Limits(timeout_s=30), host=node, max_calls=2
        )
    assert result.ok, result
    assert json.loads(result.output) == {
        "wordcount": json.loads(WORDCOUNT),
        "summary": SUMMARY,
        "errors": [],
    }
    assert seen["call"].target == "wordcount" and seen["call"].payload == TEXT
    request = json.loads(seen["infer"].payload)
    assert seen["infer"].target == "summarizer" and request["max_tokens"] == 16
    assert request["messages"][-1]["content"] == TEXT.decode()


async def test_the_digest_example_reports_failed_calls_and_still_ends_ok() -> None:
    async def node(call: HostCall) -> HostReply:
        if call.op == "call":
            return HostReply(HostStatus.UNAVAILABLE, b'no provider "answered"')
        return HostReply(HostStatus.REFUSED, b"over the context")

    async with open_worker_pool(1) as pool:
        result = await pool.run(
            example("digest"), TEXT, Limits(timeout_s=30), host=node, max_calls=2
        )
    assert result.ok and result.exit_code == 0
    assert json.loads(result.output) == {
        "wordcount": None,
        "summary": None,
        "errors": ['call: -6 no provider "answered"', "infer: -10 over the context"],
    }
