"""A daemon started from a folder full of look-alike packages runs none of their code."""

import base64
import json
import subprocess
import sys
from pathlib import Path

from mercato.node import ControlClient, DataDir

EXAMPLES = Path(__file__).parents[2] / "runtime" / "examples"
TRAP = """
import pathlib
pathlib.Path({marker!r}).write_text(__name__)
raise SystemExit("hostile code ran: " + __name__)
"""


def plant(folder: Path, marker: Path) -> None:
    """Packages named like mercato's parts, whose code would leave ``marker`` behind."""
    for package in ("mercato", "runtime", "p2p", "node", "cli", "mercato/runtime"):
        (folder / package).mkdir(parents=True, exist_ok=True)
        (folder / package / "__init__.py").write_text(TRAP.format(marker=str(marker)))
    for module in ("runtime/_worker.py", "mercato/runtime/_worker.py", "p2p/_host.py"):
        (folder / module).write_text(TRAP.format(marker=str(marker)))


def test_a_daemon_started_in_a_folder_of_hostile_packages_runs_tasks_normally(
    tmp_path: Path, initialized: DataDir, start_daemon
) -> None:
    hostile, marker = tmp_path / "hostile", tmp_path / "hostile-code-ran"
    plant(hostile, marker)
    console_script = Path(sys.executable).with_name("mercato")
    assert console_script.exists(), "the test needs the installed `mercato` command"
    start_daemon(initialized, command=[str(console_script)], cwd=hostile)
    client = ControlClient(initialized, timeout=60)
    wordcount = (EXAMPLES / "wordcount" / "wordcount.wasm").read_bytes()
    for text, words in ((b"one two three", 3), (b"a b", 2)):
        answer = client.request(
            "POST",
            "/v1/runtime/run",
            {
                "wasm": base64.b64encode(wordcount).decode(),
                "input": base64.b64encode(text).decode(),
            },
        )
        assert answer["outcome"] == "ok", answer
        assert json.loads(base64.b64decode(answer["output"]))["words"] == words
    assert client.status()["services"][-1] == "control-api"
    (hostile / "input.txt").write_text("four words right here")
    offline = subprocess.run(
        [
            str(console_script),
            "exec",
            str(EXAMPLES / "wordcount" / "wordcount.wasm"),
            *("--input", "input.txt", "--data-dir", str(tmp_path / "other")),
        ],
        cwd=hostile,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout)["words"] == 4
    assert not marker.exists(), f"code from {hostile} ran: {marker.read_text()}"
