"""`ControlClient`: the control API over HTTP, for the CLI and scripts.

Each method sends one route's request, and so runs one `NodeAPI` operation in
the daemon; it returns the route's response as JSON (the shape of its model in
``_models.py``) and raises `ControlError` with the answer's status and code. The
methods that need no daemon (keys, events) have the same names and results as
`LocalControl`'s, so the CLI need not care which one `open_control` gave it.

It finds the daemon through ``<data dir>/api.json`` and authenticates with
``<data dir>/api.token``. Blocking (stdlib http.client): meant for the CLI and
scripts, not for use on a trio loop. `chat_stream` reads the OpenAI-compatible
``/v1/chat/completions`` as server-sent events, yielding each chunk as it arrives.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, urlencode

from .._errors import ControlError, DaemonNotRunning
from .._paths import DataDir

DEFAULT_TIMEOUT_S = 10.0


class ControlClient:
    """Talks to the daemon that runs on ``datadir``."""

    def __init__(self, datadir: DataDir, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.datadir = datadir
        self.timeout = timeout
        self._verified = ""

    def _not_running(self) -> DaemonNotRunning:
        return DaemonNotRunning(
            f"no mercato daemon is running on data dir {self.datadir.root}; "
            f"start one with `mercato node start --data-dir {self.datadir.root}`"
        )

    def _address(self) -> tuple[str, int, str]:
        try:
            info = json.loads(self.datadir.api_file.read_text())
            return str(info["host"]), int(info["port"]), str(info["instance"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self._not_running() from exc

    def _check_instance(self, expected: str) -> None:
        """Make sure the daemon that wrote api.json is the one answering, before sending the token.

        A daemon that crashed leaves api.json behind, and its port may now belong
        to another program, which must never see the token.
        """
        if self._verified == expected:
            return
        try:
            answer = self.request("GET", "/v1/health", auth=False)
        except ControlError as exc:
            raise self._not_running() from exc
        if not isinstance(answer, dict) or answer.get("instance") != expected:
            raise self._not_running() from None
        self._verified = expected

    def _token(self) -> str:
        try:
            return self.datadir.token_file.read_text().strip()
        except OSError as exc:
            raise ControlError(
                f"cannot read the API token {self.datadir.token_file}: {exc.strerror}"
            ) from exc

    def request(
        self, method: str, path: str, body: Any = None, *, auth: bool = True, raw: bool = False
    ) -> Any:
        """Send one request; return the decoded JSON (or text if ``raw``).

        Raises DaemonNotRunning if nothing answers, ControlError for an error answer.
        """
        host, port, instance = self._address()
        headers = {"Accept": "application/json"}
        if auth:
            self._check_instance(instance)
            headers["Authorization"] = f"Bearer {self._token()}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        except ConnectionRefusedError as exc:
            raise self._not_running() from exc
        except TimeoutError as exc:
            raise ControlError(
                f"the daemon at {host}:{port} did not answer within {self.timeout:g} s"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise ControlError(
                f"the daemon at {host}:{port} did not answer properly: {exc}"
            ) from exc
        finally:
            conn.close()
        if response.status >= 400:
            raise self._refused(response.status, data)
        return data.decode() if raw else json.loads(data)

    def _refused(self, status: int, data: bytes) -> ControlError:
        """The error of an answer with ``status``: its body's message and code
        (mercato's, or OpenAI's ``{"error": {"message", "type", "param", "code"}}``)."""
        try:
            err = json.loads(data)["error"]
            message, code = str(err["message"]), str(err.get("code") or err.get("type") or "error")
        except (ValueError, KeyError, TypeError, AttributeError):
            message, code = data[:200].decode(errors="replace"), "error"
        if status == 401:
            message = (
                f"the daemon refused the API token in {self.datadir.token_file}; "
                "if the file was changed while the daemon runs, restart the daemon"
            )
        return ControlError(message, status=status, code=code)

    def chat_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` (OpenAI's chat request: model, messages, max_tokens...) to
        ``/v1/chat/completions`` with ``"stream": true``, and yield each chunk
        (``chat.completion.chunk``) as its event arrives, until ``[DONE]``.

        ``timeout`` bounds each wait for the next bytes, not the whole answer.
        Raises ControlError with the API's message: for an error answer (status
        and OpenAI's code or type), for an error event mid-stream (status 0), and
        for a stream that stops before ``[DONE]``. Closing the iterator early
        closes the connection.
        """
        host, port, instance = self._address()
        self._check_instance(instance)
        headers = {
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {self._token()}",
            "Content-Type": "application/json",
        }
        payload = json.dumps({**body, "stream": True}).encode()
        conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request("POST", "/v1/chat/completions", body=payload, headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                raise self._refused(response.status, response.read())
            for data in _sse_data(iter(response.readline, b"")):
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if not isinstance(chunk, dict):
                    raise ValueError(f"an event is not a JSON object: {data[:100]}")
                if isinstance(err := chunk.get("error"), dict):
                    code = str(err.get("code") or err.get("type") or "error")
                    raise ControlError(str(err.get("message", "")), code=code)
                yield chunk
            raise ControlError(f"the daemon at {host}:{port} stopped its answer before its end")
        except ConnectionRefusedError as exc:
            raise self._not_running() from exc
        except TimeoutError as exc:
            raise ControlError(
                f"the daemon at {host}:{port} sent nothing for {self.timeout:g} s"
            ) from exc
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise ControlError(
                f"the daemon at {host}:{port} did not answer properly: {exc}"
            ) from exc
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/v1/health", auth=False)

    def check(self) -> None:
        """DaemonNotRunning unless the daemon that wrote api.json is the one answering."""
        self._check_instance(self._address()[2])

    def node(self) -> dict[str, Any]:
        return self.request("GET", "/v1/node")

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")

    def shutdown(self) -> dict[str, Any]:
        return self.request("POST", "/v1/shutdown")

    def keys_list(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/keys")["keys"]

    def keys_new(self, name: str) -> dict[str, Any]:
        return self.request("POST", "/v1/keys", {"name": name})

    def keys_show(self, name: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/keys/{quote(name, safe='')}")

    def events(self, after: int = 0, limit: int = 100, kind: str | None = None) -> dict[str, Any]:
        query = {"after": after, "limit": limit} | ({"kind": kind} if kind else {})
        return self.request("GET", f"/v1/events?{urlencode(query)}")

    def events_verify(self) -> dict[str, Any]:
        return self.request("GET", "/v1/events/verify")

    def peers(self) -> dict[str, Any]:
        return self.request("GET", "/v1/peers")

    def connect(self, peer: str) -> dict[str, Any]:
        return self.request("POST", "/v1/peers/connect", {"peer": peer})

    def ping(self, peer: str) -> dict[str, Any]:
        return self.request("POST", "/v1/ping", {"peer": peer})

    def publish(self, listing: dict[str, Any], account: str = "default") -> dict[str, Any]:
        return self.request(
            "POST", "/v1/registry/publish", {"account": account, "listing": listing}
        )

    def release(
        self, release: dict[str, Any], account: str = "default", build: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"account": account, "release": release}
        if build is not None:
            body["build"] = build
        return self.request("POST", "/v1/registry/release", body)

    def releasing(self, name: str, version: str, account: str = "default") -> dict[str, Any]:
        """How the release of ``name@version`` under way on the daemon is going."""
        query = urlencode({"name": name, "version": version, "account": account})
        return self.request("GET", f"/v1/registry/release?{query}")

    def deprecate(self, name: str, account: str = "default") -> dict[str, Any]:
        return self.request("POST", "/v1/registry/deprecate", {"account": account, "name": name})

    def search(self, **query: Any) -> dict[str, Any]:
        params = {k: v for k, v in query.items() if v is not None and v != ""}
        return self.request("GET", f"/v1/registry/search?{urlencode(params)}")

    def show(self, publisher: str, name: str, peer: str | None = None) -> dict[str, Any]:
        path = f"/v1/registry/listings/{quote(publisher, safe='')}/{quote(name, safe='')}"
        return self.request("GET", path + (f"?{urlencode({'peer': peer})}" if peer else ""))

    def resolve(self, ref: str, range_text: str = "*") -> dict[str, Any]:
        return self.request(
            "GET", f"/v1/registry/resolve?{urlencode({'ref': ref, 'range': range_text})}"
        )

    def builds(self) -> dict[str, Any]:
        return self.request("GET", "/v1/builds")

    def build_add(self, path: str, pin: bool = True) -> dict[str, Any]:
        return self.request("POST", "/v1/builds/add", {"path": path, "pin": pin})

    def build_fetch(
        self, cid: str, peers: list[str] | None = None, pin: bool = False
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"cid": cid, "pin": pin}
        if peers:
            body["peers"] = peers
        return self.request("POST", "/v1/builds/fetch", body)

    def build(self, cid: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/builds/{quote(cid, safe='')}")

    def build_action(self, cid: str, action: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/builds/{quote(cid, safe='')}/{action}")

    def builds_gc(self) -> dict[str, Any]:
        return self.request("POST", "/v1/builds/gc")

    def run_task(
        self,
        agent: str,
        version: str,
        stdin: bytes,
        provider: str | None = None,
        max_price: int | None = None,
        *,
        approved: bool = False,
        idempotency_key: str | None = None,
        budget: int | None = None,
    ) -> dict[str, Any]:
        """``budget``: the most the whole run may cost, a composite agent's sub-calls
        included (default: its price alone)."""
        import base64

        body: dict[str, Any] = {
            "agent": agent,
            "version": version,
            "input": base64.b64encode(stdin).decode(),
        }
        if provider:
            body["provider"] = provider
        if max_price is not None:
            body["max_price"] = max_price
        if approved:
            body["approved"] = True
        if idempotency_key is not None:
            body["idempotency_key"] = idempotency_key
        if budget is not None:
            body["budget"] = budget
        return self.request("POST", "/v1/tasks/run", body)

    def quote(
        self,
        agent: str,
        version: str = "*",
        input_size: int = 0,
        provider: str | None = None,
        budget: int | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"agent": agent, "version": version, "input_size": input_size}
        if provider:
            body["provider"] = provider
        if budget is not None:
            body["budget"] = budget
        return self.request("POST", "/v1/tasks/quote", body)

    def ui_login(self) -> dict[str, Any]:
        return self.request("POST", "/v1/ui/login")

    def spending(self) -> dict[str, Any]:
        return self.request("GET", "/v1/spending")

    def tasks(self, limit: int = 50, role: str | None = None) -> dict[str, Any]:
        query = {"limit": limit, **({"role": role} if role else {})}
        return self.request("GET", f"/v1/tasks?{urlencode(query)}")

    def task(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/tasks/{quote(task_id, safe='')}")

    def task_proof(self, task_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/tasks/{quote(task_id, safe='')}/proof")

    def providers(self, agent: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/providers?{urlencode({'agent': agent})}")

    def wallet(self) -> dict[str, Any]:
        return self.request("GET", "/v1/wallet")

    def airdrop(self, lamports: int) -> dict[str, Any]:
        return self.request("POST", "/v1/wallet/airdrop", {"lamports": lamports})

    def channels(self) -> dict[str, Any]:
        return self.request("GET", "/v1/channels")

    def channel(self, stake: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/channels/{quote(stake, safe='')}")

    def channel_open(
        self, peer: str, deposit_lamports: int, duration_s: int, payee: str | None = None
    ) -> dict[str, Any]:
        body = {"peer": peer, "deposit_lamports": deposit_lamports, "duration_s": duration_s}
        return self.request("POST", "/v1/channels", {**body, **({"payee": payee} if payee else {})})

    def channel_close(self, stake: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/channels/{quote(stake, safe='')}/close")

    def channel_refund(self, stake: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/channels/{quote(stake, safe='')}/refund")

    def buy(self, agent: str, plan: str, approved: bool = False) -> dict[str, Any]:
        body = {"agent": agent, "plan": plan, "approved": approved}
        return self.request("POST", "/v1/licences", body)

    def licences(self) -> dict[str, Any]:
        return self.request("GET", "/v1/licences")

    def refund(self, mint: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/licences/{quote(mint, safe='')}/refund")

    def sales(self) -> dict[str, Any]:
        return self.request("GET", "/v1/sales")

    def usage(self, days: int = 30, by: str = "agent") -> dict[str, Any]:
        query = {"days": days} if by == "agent" else {"days": days, "by": by}
        return self.request("GET", f"/v1/usage?{urlencode(query)}")

    def earnings(self, days: float | None = None, since: float | None = None) -> dict[str, Any]:
        """What this node earned over the last ``days`` (default 30), or since ``since``."""
        query = {k: v for k, v in (("days", days), ("since", since)) if v is not None}
        return self.request("GET", f"/v1/earnings?{urlencode(query)}")

    def metrics(self) -> str:
        return self.request("GET", "/metrics", raw=True)


def _sse_data(lines: Iterable[bytes]) -> Iterator[str]:
    """The data of each server-sent event in ``lines`` (its ``data:`` lines joined
    by newlines), as the event ends; comments and other fields are skipped."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
            data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # the last event, when the stream ends without its blank line
        yield "\n".join(data)
