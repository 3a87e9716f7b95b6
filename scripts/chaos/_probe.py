"""A probe that runs inside one namespace and answers the orchestrator over a pipe.

The control API of a node listens on 127.0.0.1 of the node's own namespace, so
the orchestrator, in the root namespace, cannot reach it; starting a CLI in the
namespace for every status poll costs a second of CPU. This process, started
once per namespace (``ip netns exec NS python _probe.py``), reads one JSON
request a line on stdin and writes one JSON answer a line on stdout:

    {"op": "control", "dir": DATA_DIR, "method": "GET", "path": "/v1/status"}
    {"op": "rpc", "url": URL, "method": "getBalance", "params": [ADDRESS]}
    {"op": "tcp", "host": "10.231.0.12", "port": 4001}

Answers are ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": "..."}``.
Stdlib only, so it starts fast and never imports the code under test.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def control(req: dict[str, Any]) -> Any:
    root = Path(req["dir"])
    api = json.loads((root / "api.json").read_text())
    token = (root / "api.token").read_text().strip()
    headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
    body = None
    if req.get("body") is not None:
        body = json.dumps(req["body"]).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection(api["host"], int(api["port"]), timeout=req.get("timeout", 10))
    try:
        conn.request(req.get("method", "GET"), req["path"], body=body, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
    finally:
        conn.close()
    if answer.status >= 400:
        raise RuntimeError(f"HTTP {answer.status}: {data[:300].decode(errors='replace')}")
    return json.loads(data)


def rpc(req: dict[str, Any]) -> Any:
    url = urlsplit(req["url"])
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=req.get("timeout", 10))
    body = {"jsonrpc": "2.0", "id": 1, "method": req["method"], "params": req.get("params", [])}
    try:
        conn.request("POST", url.path or "/", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})  # fmt: skip
        data = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    if "error" in data:
        raise RuntimeError(f"RPC {req['method']}: {data['error']}")
    return data["result"]


def tcp(req: dict[str, Any]) -> bool:
    with socket.socket() as probe:
        probe.settimeout(req.get("timeout", 1.0))
        return probe.connect_ex((req["host"], int(req["port"]))) == 0


OPS = {"control": control, "rpc": rpc, "tcp": tcp}


def main() -> None:
    for line in sys.stdin:
        try:
            req = json.loads(line)
            answer = {"ok": True, "result": OPS[req["op"]](req)}
        except Exception as exc:  # every failure is an answer: the orchestrator judges it
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
