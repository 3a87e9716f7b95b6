"""Prometheus metrics of one node, in a registry of its own (no module globals).

Served at ``GET /metrics`` on the control API (bearer token required; point
Prometheus' ``authorization.credentials_file`` at ``<data dir>/api.token``).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest

from ._events import Event


class NodeMetrics:
    """The counters and gauges a node keeps. Thread-safe: workers may update them."""

    def __init__(self, version: str) -> None:
        self.registry = CollectorRegistry()
        self.started = time.time()
        ProcessCollector(registry=self.registry)
        info = Gauge(
            "mercato_build_info",
            "Version of the running node.",
            ["version"],
            registry=self.registry,
        )
        info.labels(version=version).set(1)
        uptime = Gauge(
            "mercato_uptime_seconds", "Seconds since the node started.", registry=self.registry
        )
        uptime.set_function(lambda: time.time() - self.started)
        self.api_requests = Counter(
            "mercato_api_requests_total",
            "Control API requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "mercato_api_request_seconds",
            "Control API request handling time.",
            ["route"],
            registry=self.registry,
        )
        self.events = Counter(
            "mercato_events_total",
            "Events appended to the event log.",
            ["kind"],
            registry=self.registry,
        )

        self.runtime_runs = Counter(
            "mercato_runtime_runs_total",
            "WebAssembly runs by outcome (ok, trap, out_of_fuel, timeout, ...).",
            ["outcome"],
            registry=self.registry,
        )
        self.runtime_seconds = Histogram(
            "mercato_runtime_run_seconds",
            "Wall time of WebAssembly runs, worker round trip included.",
            registry=self.registry,
        )

        self.gateway_requests = Counter(
            "mercato_gateway_requests_total",
            "x402 gateway answers by route and status (402: payment required or refused).",
            ["route", "status"],
            registry=self.registry,
        )
        self.gateway_settled = Counter(
            "mercato_gateway_settled_base_units_total",
            "What settled x402 payments paid, in their asset's base units.",
            ["asset"],
            registry=self.registry,
        )

    def on_event(self, event: Event) -> None:
        self.events.labels(kind=event.kind).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
