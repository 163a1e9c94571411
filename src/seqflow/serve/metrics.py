"""Prometheus metrics of the serving app (``GET /metrics``), on a registry of their own.

===========================================  =========  ==========================================
name                                         type       labels
===========================================  =========  ==========================================
``seqflow_requests_total``                   counter    endpoint, method, status
``seqflow_request_latency_seconds``          histogram  endpoint (whole request, seconds)
``seqflow_request_errors_total``             counter    endpoint, reason (4xx/5xx reasons)
``seqflow_audio_seconds_total``              counter    endpoint (seconds of audio processed)
``seqflow_model_version``                    gauge      model, alias (loaded version number)
``seqflow_model_ready``                      gauge      model, alias (1 when a version is loaded)
``seqflow_model_reloads_total``              counter    model (versions swapped in)
``seqflow_mlflow_reachable``                 gauge      (1 when the last registry poll answered)
``seqflow_stream_connections``               gauge      (open ``/v1/stream`` sockets)
``seqflow_stream_events_total``              counter    type (detection, error)
``seqflow_vad_gate_total``                   counter    outcome (kept, dropped)
``seqflow_inflight_model_calls``             gauge      (model calls queued or running)
===========================================  =========  ==========================================
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServeMetrics:
    """All serving metrics on one :class:`CollectorRegistry` (one per app, so tests can build
    several apps in one process)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("seqflow_requests_total", "HTTP requests answered", ["endpoint", "method", "status"],
                                registry=r)
        self.latency = Histogram("seqflow_request_latency_seconds", "Request latency [s]", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("seqflow_request_errors_total", "Requests answered with an error", ["endpoint", "reason"],
                              registry=r)
        self.audio_seconds = Counter("seqflow_audio_seconds_total", "Seconds of audio processed", ["endpoint"],
                                     registry=r)
        self.model_version = Gauge("seqflow_model_version", "Loaded model version", ["model", "alias"], registry=r)
        self.model_ready = Gauge("seqflow_model_ready", "1 when a version of the model is loaded", ["model", "alias"],
                                 registry=r)
        self.reloads = Counter("seqflow_model_reloads_total", "Model versions swapped in", ["model"], registry=r)
        self.mlflow_reachable = Gauge("seqflow_mlflow_reachable", "1 when the last registry poll answered",
                                      registry=r)
        self.stream_connections = Gauge("seqflow_stream_connections", "Open /v1/stream sockets", registry=r)
        self.stream_events = Counter("seqflow_stream_events_total", "Events sent on /v1/stream", ["type"], registry=r)
        self.vad_gate = Counter("seqflow_vad_gate_total", "Detections judged by the VAD gate", ["outcome"], registry=r)
        self.inflight = Gauge("seqflow_inflight_model_calls", "Model calls queued or running", registry=r)
        self._versions: dict[str, str] = {}

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def update_models(self, slots: Sequence) -> None:
        """Refresh the model gauges from :class:`seqflow.serve.models.ModelSlot` objects."""
        reachable = [s.mlflow_reachable for s in slots if s.mlflow_reachable is not None]
        if reachable:
            self.mlflow_reachable.set(1.0 if all(reachable) else 0.0)
        for s in slots:
            alias = s.ref.alias or ""
            cur = s.current
            self.model_ready.labels(s.ref.name, alias).set(1.0 if cur else 0.0)
            if cur is not None:
                self.model_version.labels(s.ref.name, alias).set(float(cur.version))
                if self._versions.get(s.ref.uri) not in (None, cur.version):
                    self.reloads.labels(s.ref.name).inc()
                self._versions[s.ref.uri] = cur.version

    def render(self) -> bytes:
        """The text exposition format of every metric."""
        return generate_latest(self.registry)
