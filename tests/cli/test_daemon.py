"""The daemon as an operator runs it: real processes on temporary data dirs."""

import http.server
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import pytest

from mercato.node import DataDir

from ..conftest import run_cli, wait_for


def status_json(datadir: DataDir) -> dict:
    result = run_cli("node", "status", "--json", "--data-dir", str(datadir.root))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_start_status_stop(datadir: DataDir, start_daemon) -> None:
    daemon = start_daemon(datadir)  # also initializes the fresh data dir
    info = status_json(datadir)
    assert info["pid"] == daemon.proc.pid
    assert info["peer_id"].startswith("12D3KooW")
    text = run_cli("node", "status", "--data-dir", str(datadir.root))
    assert "running" in text.stdout and info["peer_id"] in text.stdout
    stopped = run_cli("node", "stop", "--data-dir", str(datadir.root))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert daemon.wait(timeout=5) == 0
    assert not datadir.api_file.exists()


def test_restart_keeps_keys_config_and_events(initialized: DataDir, start_daemon) -> None:
    text = initialized.config_file.read_text().replace('name = ""', 'name = "shop-7"')
    initialized.config_file.write_text(text)
    first = start_daemon(initialized)
    created = run_cli("keys", "new", "alice", "--data-dir", str(initialized.root))
    assert created.returncode == 0, created.stderr
    before = status_json(initialized)
    keys_before = json.loads(
        run_cli("keys", "list", "--json", "--data-dir", str(initialized.root)).stdout
    )
    wallet_before = json.loads(
        run_cli("wallet", "--json", "--data-dir", str(initialized.root)).stdout
    )
    assert wallet_before["balance"] == 10_000_000_000  # the embedded ledger's faucet
    assert run_cli("node", "stop", "--data-dir", str(initialized.root)).returncode == 0
    first.wait(timeout=5)

    # No faucet this time: whatever the wallet holds now, the journal kept.
    start_daemon(initialized, env={"MERCATO_SETTLEMENT_FAUCET_LAMPORTS": "0"})
    after = status_json(initialized)
    assert after["name"] == "shop-7"
    assert after["peer_id"] == before["peer_id"]
    assert after["accounts"] == ["alice", "default"]
    keys_after = json.loads(
        run_cli("keys", "list", "--json", "--data-dir", str(initialized.root)).stdout
    )
    assert keys_after == keys_before
    wallet_after = json.loads(
        run_cli("wallet", "--json", "--data-dir", str(initialized.root)).stdout
    )
    assert (wallet_after["address"], wallet_after["balance"]) == (
        wallet_before["address"],
        wallet_before["balance"],
    )  # the embedded ledger's journal kept it
    listed = run_cli("channel", "ls", "--data-dir", str(initialized.root))
    assert listed.returncode == 0 and listed.stdout == "no channels yet\n"
    events = run_cli("events", "--json", "--data-dir", str(initialized.root)).stdout.splitlines()
    kinds = [json.loads(line)["kind"] for line in events]
    assert kinds.count("node.started") == 2 and kinds.count("node.stopped") == 1
    assert "key.created" in kinds
    verify = run_cli("events", "--verify", "--data-dir", str(initialized.root))
    assert verify.returncode == 0 and "OK" in verify.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_daemon_cleanly_within_5_s(
    initialized: DataDir, start_daemon, signum
) -> None:
    daemon = start_daemon(initialized)
    sent = time.monotonic()
    daemon.signal(signum)
    assert daemon.wait(timeout=5) == 0
    assert time.monotonic() - sent < 5
    assert not initialized.api_file.exists()
    assert "stopped" in daemon.log()
    last = json.loads(
        run_cli("events", "--json", "--data-dir", str(initialized.root)).stdout.splitlines()[-1]
    )
    assert last["kind"] == "node.stopped"


def test_a_second_daemon_on_the_same_data_dir_refuses(initialized: DataDir, start_daemon) -> None:
    first = start_daemon(initialized)
    second = start_daemon(initialized, wait=False)
    assert second.wait(timeout=20) == 1
    assert f"(pid {first.proc.pid}) is already using data dir" in second.log()
    assert status_json(initialized)["pid"] == first.proc.pid  # the first is unharmed


def test_commands_that_need_a_daemon_say_how_to_start_one(initialized: DataDir) -> None:
    for args in (["node", "status"], ["node", "stop"]):
        result = run_cli(*args, "--data-dir", str(initialized.root))
        assert result.returncode == 1
        assert "no mercato daemon is running" in result.stderr
        assert f"mercato node start --data-dir {initialized.root}" in result.stderr


def test_keys_and_events_work_without_a_daemon(initialized: DataDir) -> None:
    root = str(initialized.root)
    assert run_cli("keys", "new", "bob", "--data-dir", root).returncode == 0
    shown = json.loads(run_cli("keys", "show", "bob", "--json", "--data-dir", root).stdout)
    assert shown["kind"] == "account"
    assert "secret" not in json.dumps(shown)
    events = run_cli("events", "--data-dir", root)
    assert "key.created" in events.stdout and "bob" in events.stdout


def test_an_unknown_config_key_is_named_and_the_node_does_not_start(
    initialized: DataDir, start_daemon
) -> None:
    text = initialized.config_file.read_text().replace('level = "info"', 'levle = "debug"')
    initialized.config_file.write_text(text)
    daemon = start_daemon(initialized, wait=False)
    assert daemon.wait(timeout=20) == 1
    log = daemon.log()
    assert "'levle'" in log and str(initialized.config_file) in log


def test_a_data_dir_of_an_unknown_format_is_refused(initialized: DataDir, start_daemon) -> None:
    initialized.format_file.write_text("99\n")
    daemon = start_daemon(initialized, wait=False)
    assert daemon.wait(timeout=20) == 1
    assert "format version 99" in daemon.log() and "version 1" in daemon.log()
    listed = run_cli("keys", "list", "--data-dir", str(initialized.root))
    assert listed.returncode == 1 and "format version 99" in listed.stderr


def test_a_tampered_event_log_is_named_by_verify(initialized: DataDir) -> None:
    root = str(initialized.root)
    for name in ("a1", "a2", "a3"):
        run_cli("keys", "new", name, "--data-dir", root)
    conn = sqlite3.connect(initialized.db_file)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("""UPDATE events SET data = replace(data, '"a2"', '"zz"') WHERE seq = 5""")
    conn.commit()
    conn.close()
    result = run_cli("events", "--verify", "--data-dir", root)
    assert result.returncode == 1
    assert "BROKEN at entry 5" in result.stdout
    as_json = json.loads(run_cli("events", "--verify", "--json", "--data-dir", root).stdout)
    assert as_json["first_bad"] == 5 and as_json["ok"] is False


def test_logs_are_json_with_the_flag(initialized: DataDir, start_daemon) -> None:
    daemon = start_daemon(initialized, "--log-json")
    daemon.signal(signal.SIGTERM)
    daemon.wait(timeout=5)
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.strip()]
    ready = [line for line in lines if line["msg"] == "ready"]
    assert ready and ready[0]["level"] == "info" and ready[0]["api"].startswith("http://127.0.0.1:")


def test_loose_key_permissions_warn_at_start(initialized: DataDir, start_daemon) -> None:
    os.chmod(initialized.node_key_file, 0o644)
    daemon = start_daemon(initialized)
    wait_for(lambda: "chmod 600" in daemon.log(), 5, "the permission warning")
    assert any("chmod 600" in w for w in status_json(initialized)["warnings"])


def test_stop_never_signals_a_process_that_only_inherited_a_stale_pid(initialized: DataDir) -> None:
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        initialized.lock_file.write_text(f"{bystander.pid}\n")  # as a crashed daemon leaves it
        result = run_cli("node", "stop", "--data-dir", str(initialized.root))
        assert result.returncode == 1 and "no mercato daemon is running" in result.stderr
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_stale_api_file_never_leaks_the_token(initialized: DataDir) -> None:
    seen: list[str] = []

    class Squatter(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"status": "ok", "keys": []}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Squatter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        initialized.api_file.write_text(
            json.dumps({"host": "127.0.0.1", "port": port, "pid": 1, "instance": "gone"})
        )
        listed = run_cli("keys", "list", "--json", "--data-dir", str(initialized.root))
        assert listed.returncode == 0, listed.stderr
        assert [k["name"] for k in json.loads(listed.stdout)] == ["node", "default"]
        token = initialized.token_file.read_text().strip()
        assert all(token not in header for header in seen)
    finally:
        server.shutdown()
        server.server_close()


def test_an_empty_token_file_stops_the_daemon_from_starting(
    initialized: DataDir, start_daemon
) -> None:
    initialized.token_file.write_text("")
    daemon = start_daemon(initialized, wait=False)
    assert daemon.wait(timeout=20) == 1
    assert "open to anyone" in daemon.log()


def test_an_api_port_in_use_is_a_clear_error(initialized: DataDir, tmp_path, start_daemon) -> None:
    first = start_daemon(initialized)
    port = str(first.client.status()["api"].rsplit(":", 1)[1])
    other = DataDir(tmp_path / "other")
    assert run_cli("init", "--data-dir", str(other.root)).returncode == 0
    second = start_daemon(other, "--api-port", port, wait=False)
    assert second.wait(timeout=20) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in second.log() and "--api-port" in second.log()
    assert "Traceback" not in second.log()
    kinds = run_cli("events", "--json", "--data-dir", str(other.root)).stdout
    assert "node.started" not in kinds and "node.stopped" not in kinds


def test_an_invalid_environment_value_names_the_variable(
    initialized: DataDir, start_daemon
) -> None:
    daemon = start_daemon(initialized, env={"MERCATO_LOG_LEVEL": "loud"}, wait=False)
    assert daemon.wait(timeout=20) == 1
    assert "environment variable MERCATO_LOG_LEVEL" in daemon.log() and "'loud'" in daemon.log()


@pytest.mark.parametrize("name", ["node", "evil\n", "de fault", "a/b", "default?x"])
def test_account_names_are_refused_the_same_with_or_without_a_daemon(
    initialized: DataDir, start_daemon, name: str
) -> None:
    offline = run_cli("keys", "new", name, "--data-dir", str(initialized.root))
    assert offline.returncode == 2 and "account name" in offline.stderr  # a usage error
    start_daemon(initialized)
    online = run_cli("keys", "new", name, "--data-dir", str(initialized.root))
    assert online.returncode == 2 and "account name" in online.stderr
    shown = run_cli("keys", "show", name, "--data-dir", str(initialized.root))
    assert shown.returncode == (0 if name == "node" else 1)  # "node" is the node key
