"""Prometheus metrics of the scoring service, in a registry of its own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from finalmlp.serve.arms import ArmBundle

ENDPOINTS = frozenset(
    [
        "/v1/predict",
        "/v1/feedback",
        "/v1/ab",
        "/v1/model",
        "/v1/admin/reload",
        "/healthz",
        "/metrics",
    ]
)
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class ServiceMetrics:
    """Requests by endpoint and status, latency, errors, per-arm counts, micro-batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "finalmlp_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "finalmlp_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "finalmlp_errors",
            "HTTP responses >= 400 (client: 4xx, server: 5xx)",
            ["endpoint", "kind"],
            registry=r,
        )
        self.arm_requests = Counter(
            "finalmlp_arm_requests", "Scoring requests per arm", ["arm"], registry=r
        )
        self.impressions = Counter(
            "finalmlp_impressions", "Records scored per arm", ["arm"], registry=r
        )
        self.feedback = Counter(
            "finalmlp_feedback", "Outcomes received per arm", ["arm"], registry=r
        )
        self.clicks = Counter("finalmlp_clicks", "Clicks received per arm", ["arm"], registry=r)
        self.batch_rows = Histogram(
            "finalmlp_scoring_batch_rows", "Rows per model call", buckets=ROW_BUCKETS, registry=r
        )
        self.batch_requests = Histogram(
            "finalmlp_scoring_batch_requests",
            "Requests per model call (micro-batching)",
            buckets=ROW_BUCKETS,
            registry=r,
        )
        self.model = Gauge(
            "finalmlp_model_info",
            "Served model version per arm (value 1)",
            ["arm", "model_version"],
            registry=r,
        )

        self.reloads = Counter(
            "finalmlp_reloads", "Bundle reloads (admin endpoint or SIGHUP)", ["outcome"], registry=r
        )

    def set_models(self, arms: Sequence[ArmBundle]) -> None:
        self.model.clear()
        for arm in arms:
            self.model.labels(arm.name, arm.version).set(1)

    def observe_predict(self, arm: str, rows: int) -> None:
        self.arm_requests.labels(arm).inc()
        self.impressions.labels(arm).inc(rows)

    def observe_feedback(self, arm: str, outcomes: Sequence[Any]) -> None:
        """Outcomes: 0/1 numbers, or ``{task: 0, 1 or None}`` (each observed task counts)."""
        values = [
            v
            for o in outcomes
            for v in (o.values() if isinstance(o, dict) else (o,))
            if v is not None
        ]
        self.feedback.labels(arm).inc(len(values))
        self.clicks.labels(arm).inc(sum(values))

    def observe_batch(self, rows: int, requests: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(requests)

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        if status >= 400:
            self.errors.labels(endpoint, "server" if status >= 500 else "client").inc()


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: no per-request task or body copy)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path: Any = scope.get("path", "")
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.observe_request(endpoint, status, time.perf_counter() - start)
