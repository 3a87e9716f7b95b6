"""The task service: runs agents for other peers, and runs agents on other peers.

Provider side (`_answer`): the release comes from this node's registry, the
build from its store (fetched from the peers that hold it if it is not here),
the run from its sandbox under the listing's limits capped by ``[runtime]``;
the answer carries the output and a signed `Receipt`.

User side (`run`): ask the given provider, or each connected provider in turn
until one answers with an output and a receipt that hold up (signature, task,
input, output, and the build the user's own registry names for that release).
A provider whose receipt does not hold up is penalised; one that fails or
refuses is passed over for the next.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

import trio

from crdt import Version, VersionError, VersionRange
from p2p import Keypair, Overlay, P2PError, Refused
from runtime import Limits, LimitsError, SandboxError, WorkerPool

from ._builds import BuildError
from ._buildservice import BuildService
from ._config import RuntimeSection
from ._registry import RegistryService
from ._tasks import (
    MAX_TASK_OUTPUT,
    TASK,
    BadReceipt,
    Receipt,
    TaskError,
    TaskRequest,
    TaskResponse,
    digest,
)

log = logging.getLogger("mercato.tasks")

FETCH_TIMEOUT_S = 60.0
PENALTY_BAD_RECEIPT = 50.0


class TaskService:
    def __init__(
        self,
        node_key: Keypair,
        overlay: Overlay,
        registry: RegistryService,
        builds: BuildService,
        runtime: WorkerPool,
        caps: RuntimeSection,
    ) -> None:
        self._key = node_key
        self._overlay = overlay
        self._registry = registry
        self._builds = builds
        self._runtime = runtime
        self._caps = caps
        self.served = 0

    def serve(self) -> None:
        self._overlay.requests.serve(TASK, self._answer)

    # -- provider ----------------------------------------------------------------

    async def _release(self, agent: str, wanted: str) -> tuple[dict[str, Any], dict[str, Any]]:
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name) if publisher and name else None
        if shown is None or shown.get("deprecated"):
            raise Refused("unknown_agent", f"this node's registry has no agent {agent[:120]}")
        try:
            wanted_range = VersionRange.parse(wanted)
        except VersionError as exc:
            raise Refused("bad_request", str(exc)) from None
        for release in shown["releases"]:  # newest first
            if wanted_range.matches(Version.parse(release["version"])):
                return shown, release
        raise Refused("unknown_agent", f"no release of {agent} matches {wanted}")

    def _limits(self, listing: dict[str, Any], stdin: bytes) -> Limits:
        declared = listing.get("limits") or {}
        try:
            limits = Limits(
                fuel=declared.get("fuel", Limits.fuel),
                timeout_s=min(float(declared.get("timeout_s", 10)), self._caps.max_timeout_s),
                memory_mb=min(declared.get("memory_mb", 64), self._caps.max_memory_mb),
                max_input_bytes=declared.get("max_input_bytes", Limits.max_input_bytes),
                max_output_bytes=min(
                    declared.get("max_output_bytes", Limits.max_output_bytes), MAX_TASK_OUTPUT
                ),
            ).check()
        except LimitsError as exc:
            raise Refused("bad_listing", str(exc)) from None
        if len(stdin) > limits.max_input_bytes:
            raise Refused(
                "input_too_large", f"the input is over the listing's {limits.max_input_bytes} bytes"
            )
        return limits

    async def _build_path(self, cid: str) -> Any:
        info = await self._builds.info(cid)
        if info is None or not info.complete:
            try:
                with trio.fail_after(FETCH_TIMEOUT_S):
                    await self._builds.fetch(cid, await self._builds.copies(cid))
            except (BuildError, P2PError, trio.TooSlowError) as exc:
                raise Refused("unavailable", f"cannot get the build {cid}: {exc}") from None
        return self._builds.builds.path(cid)

    async def _answer(self, peer: str, request: TaskRequest) -> TaskResponse:
        listing, release = await self._release(request.agent, request.version)
        price = int(listing["price"])
        if price > 0:
            raise Refused(
                "payment_required", "paid tasks need payment channels; this node runs free ones"
            )
        limits = self._limits(listing, request.input)
        path = await self._build_path(release["cid"])
        try:
            result = await self._runtime.run(
                path, request.input, limits, key=release["cid"], name=listing["name"]
            )
        except SandboxError as exc:
            raise Refused("cannot_run", str(exc)) from None
        receipt = Receipt(
            task=request.task,
            agent=request.agent,
            version=release["version"],
            cid=release["cid"],
            input_hash=digest(request.input),
            output_hash=digest(result.output),
            outcome=result.outcome.value,
            fuel=result.usage.fuel or 0,
            wall_ms=int(result.usage.wall_ms),
            price=price,
            provider=self._overlay.peer_id,
            user=peer,
            time=int(time.time()),
        )
        self.served += 1
        signed = await trio.to_thread.run_sync(receipt.sign, self._key)
        return TaskResponse(output=result.output, receipt=signed)

    # -- user ----------------------------------------------------------------------

    def providers(self) -> list[str]:
        host = self._overlay.host
        return [p for p in host.connected_peers() if TASK.id in host.protocols_of(p)]

    async def run(
        self, agent: str, version: str, stdin: bytes, provider: str | None = None
    ) -> dict[str, Any]:
        """Run ``agent`` on ``provider`` (or the first connected provider that can);
        TaskError if none could, saying why each failed."""
        candidates = [provider] if provider else self.providers()
        if not candidates:
            raise TaskError("no provider is connected; connect to one or give --provider")
        errors = []
        for peer in candidates:
            task = secrets.token_bytes(16)
            request = TaskRequest(task=task, agent=agent, version=version, input=stdin)
            try:
                answer = await self._overlay.requests.request(peer, TASK, request)
                receipt = await trio.to_thread.run_sync(Receipt.verify, answer.receipt)
                receipt.check(task, peer, stdin, answer.output)
                await self._check_release(agent, receipt)
            except BadReceipt as exc:
                await self._overlay.host.penalize(peer, PENALTY_BAD_RECEIPT, str(exc))
                errors.append(f"{peer[:16]}…: {exc}")
                continue
            except P2PError as exc:
                errors.append(f"{peer[:16]}…: {exc}")
                continue
            return {"output": answer.output, "receipt": receipt, "provider": peer}
        raise TaskError(f"no provider ran {agent}: " + "; ".join(errors[:4]))

    async def _check_release(self, agent: str, receipt: Receipt) -> None:
        """The build the provider ran must be the one this node's registry binds to
        that release (when this node knows it)."""
        publisher, _, name = agent.partition("/")
        shown = await self._registry.show(publisher, name)
        for release in (shown or {}).get("releases", []):
            if release["version"] == receipt.version and release["cid"] != receipt.cid:
                raise BadReceipt(f"the provider ran {receipt.cid}, not the release's build")
