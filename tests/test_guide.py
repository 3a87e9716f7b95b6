"""The README's Guide is a test: its shell blocks run in order, exactly as written.

A reader follows the Guide in one terminal, from the root of a clone, with
`.venv/bin` on the PATH. So does this test: every command of the Guide's ```sh
blocks runs with bash, in order, in a temporary directory that links to the
clone's top-level files (the Guide names `README.md` and `runtime/`), with a
temporary HOME, so every data dir (the nodes' and the localnet's) is new and
nothing touches the real home. Shell variables the Guide sets (`PUB=$(...)`,
`export ...`) carry over to the next command, as in the reader's shell; the
placeholders are those variables, filled by the commands the Guide shows.

What the test adds to the environment only keeps it away from other nodes and
tests on this machine (tests/conftest.py's TEST_ENV): control API and peer
ports the system picks for nodes started without their own, and no mDNS. The
Guide's localnet binds its default ports, 8899 and 8900, as the reader's does.

A command ending in `&` runs in the background, as the reader's shell runs it;
the test waits until what it started answers (a node: `mercato node status`; the
localnet: its port), as the reader waits a second. A block after an HTML
comment `<!-- guide-test: skip (why) -->` is not run (the relay needs a VPS).

The test fails at the first command that exits non-zero, outlives its timeout,
or does not print what the Guide says it shows (EXPECTED below). Every node and
the localnet are stopped at the end, whatever happened.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import TEST_ENV, budget

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SKIP = re.compile(r"<!--\s*guide-test:\s*skip\s*\((?P<why>[^)]+)\)\s*-->")
LOCALNET_PORTS = (8899, 8900)  # `mercato localnet`'s defaults: JSON-RPC, then WebSocket
COMMAND_TIMEOUT_S = budget(120.0)
UP_TIMEOUT_S = budget(30.0)
EVENTUALLY_S = budget(30.0)


@dataclass(frozen=True)
class Expect:
    """What the Guide says a command shows: ``output`` (a regex) in what the command
    whose text matches ``command`` prints. ``eventually``: the Guide says it takes a
    few seconds, so the command is run again, as the reader would, until it shows."""

    command: str
    output: str
    eventually: bool = False


EXPECTED = [
    Expect(r"^mercato init$", r"initialized data dir"),
    Expect(r"^mercato node status$", r"status:\s+running"),
    Expect(r"^mercato exec .*wordcount\.wasm --input README\.md$", r'"words": [1-9]\d*'),
    Expect(r"^mercato publish .*wordcount/MANIFEST\.toml$", r"published \w+/wordcount"),
    Expect(r"^mercato peers$", r"12D3KooW", eventually=True),
    Expect(r"^mercato release wordcount 1\.0\.0 ", r"released \w+/wordcount@1\.0\.0"),
    Expect(r'^mercato search "word count"$', r"/wordcount\b"),
    Expect(r"^mercato show \$PUB/wordcount$", r"(?s)price 1,?000 lamports.*1\.0\.0"),
    Expect(r"^mercato providers \$PUB/wordcount$", r"12D3KooW\S*\s.*1,?000", eventually=True),
    Expect(r"^echo .* \| mercato run \$PUB/wordcount", r'"words": 3\b'),
    Expect(r"^mercato tasks ls$", r"wordcount\S*\s.*\bok\b"),
    Expect(r"^mercato channel ls --data-dir \S+$", r"payee\b.*\b(paid )?1,?000\b"),
    Expect(r"^mercato channel close ", r"closed \w+: paid 1,?000 lamports"),
    # The faucet's 10 SOL, plus the task's 1,000 lamports, less the close's 10,000 in fees.
    Expect(r"^mercato wallet --data-dir \S+$", r"\b9,?999,?991,?000 lamports\b.*localnet"),
    Expect(r"^mercato node stop --data-dir \S+$", r"stopped"),
    Expect(r"^mercato node stop$", r"stopped"),
]


def guide_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Guide\n")
    return readme[start : readme.index("The sections below are the reference", start)]


def guide_commands() -> tuple[list[str], list[str]]:
    """The Guide's commands in order, and the lines of its skipped blocks with why."""
    commands, skipped = [], []
    for match in re.finditer(r"(?P<before>[^\n]*)\n```sh\n(?P<body>.*?)```", guide_section(), re.S):
        lines = re.sub(r"\\\n\s*", " ", match["body"]).splitlines()
        lines = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if why := SKIP.search(match["before"]):
            skipped += [f"{line}  (skipped: {why['why']})" for line in lines]
        else:
            commands += lines
    return commands, skipped


@dataclass
class Shell:
    """The reader's shell: one bash per command, with the variables of the last."""

    cwd: Path
    env: dict[str, str]
    state: Path
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def run(self, command: str, timeout: float = COMMAND_TIMEOUT_S) -> tuple[int, str]:
        """Run ``command`` in the foreground: its exit status and output (stdout, then
        stderr). Variables it sets are kept: `set -a` exports them, env dumps them."""
        script = f"set -a\n{command}\n__status=$?\nenv -0 > {shlex.quote(str(self.state))}\n"
        script += "exit $__status\n"
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            text = (out + err).decode(errors="replace")
            pytest.fail(f"`{command}` did not finish within {timeout:.0f} s; it printed:\n{text}")
        if proc.returncode == 0:
            pairs = self.state.read_bytes().split(b"\0")
            values = dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
            self.env = {k: v for k, v in values.items() if not k.startswith("__")}
        return proc.returncode, (out + err).decode(errors="replace")

    def start(self, command: str) -> None:
        """Run ``command`` (without its `&`) in the background, its output to a log."""
        log = self.cwd.parent / f"background-{len(self.background) + 1}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.background.append((command, proc, log))

    def wait_up(self, command: str) -> None:
        """Wait until what ``command`` started answers, as the reader waits."""
        _, proc, log = self.background[-1]
        deadline = time.monotonic() + UP_TIMEOUT_S
        while not self._answers(command):
            if proc.poll() is not None:
                pytest.fail(f"`{command} &` exited {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"`{command} &` not up after {UP_TIMEOUT_S:.0f} s:\n{log.read_text()}")
            time.sleep(0.2)

    def _answers(self, command: str) -> bool:
        words = shlex.split(command)
        if words[:3] == ["mercato", "node", "start"]:
            return self.run(f"mercato node status{_data_dir(command)} >/dev/null", 15)[0] == 0
        if words[:2] == ["mercato", "localnet"]:
            return _accepts(LOCALNET_PORTS[0])
        raise AssertionError(f"the test does not know when `{command} &` is up")

    def stop_all(self) -> None:
        """Stop what the Guide started in the background and still runs: nodes as the
        Guide stops them, then whatever is left (the localnet) by signal."""
        for command, proc, _ in reversed(self.background):
            if proc.poll() is None and "node start" in command:
                self.run(f"mercato node stop{_data_dir(command)}", timeout=30)
        for _, proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _data_dir(command: str) -> str:
    """`` --data-dir DIR`` as ``command`` writes it (bash expands ~ and $VARS), or ""."""
    if "--data-dir" not in command:
        return ""
    return " --data-dir " + command.split("--data-dir", 1)[1].split()[0]


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _expectation(command: str) -> Expect | None:
    found = [e for e in EXPECTED if re.search(e.command, command)]
    assert len(found) <= 1, f"`{command}` matches more than one expectation: {found}"
    return found[0] if found else None


def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    commands, skipped = guide_commands()
    assert len(commands) >= 15, "the Guide's ```sh blocks were not found"
    for command in commands:  # every placeholder is a variable an earlier command sets
        assert not re.search(r"8Co4tt|PUBLISHER/|\.\.\.|<\w+>", command), command
    used = {e.command for c in commands if (e := _expectation(c))}
    unused = [e.command for e in EXPECTED if e.command not in used]
    assert not unused, f"the Guide no longer has the commands these checks are for: {unused}"
    busy = [p for p in LOCALNET_PORTS if _accepts(p)]
    assert not busy, f"the Guide's localnet needs ports {LOCALNET_PORTS}; {busy} in use here"

    clone = tmp_path / "clone"  # the root of a clone, as the Guide's reader stands in it
    clone.mkdir()
    for entry in ROOT.iterdir():
        if not entry.name.startswith("."):
            (clone / entry.name).symlink_to(entry)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MERCATO_", "XDG_"))}
    env |= TEST_ENV | {
        "HOME": str(home),
        "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
    }
    shell = Shell(clone, env, tmp_path / "shell.env")
    try:
        for command in commands:
            print(f"$ {command}", flush=True)
            if command.endswith("&"):
                command = command[:-1].strip()
                shell.start(command)
                shell.wait_up(command)
                print("  (in the background; up)", flush=True)
                continue
            expect = _expectation(command)
            deadline = time.monotonic() + (EVENTUALLY_S if expect and expect.eventually else 0)
            while True:
                status, output = shell.run(command)
                shown = expect is None or re.search(expect.output, output)
                if status != 0 or shown or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            print(output, end="" if output.endswith("\n") or not output else "\n", flush=True)
            assert status == 0, f"`{command}` exited {status}"
            assert shown, f"`{command}` does not show what the Guide says ({expect.output!r})"
        for line in skipped:
            print(f"$ {line}")
    finally:
        shell.stop_all()
        for command, _, log in shell.background:
            tail = "".join(log.read_text().splitlines(True)[-20:])
            print(f"--- the last lines of `{command} &`:\n{tail}")
