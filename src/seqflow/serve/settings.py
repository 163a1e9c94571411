"""Settings of ``seqflow serve`` (the ``serve:`` section of ``conf/config.yaml``) as one frozen object.

>>> s = ServeSettings.from_config(load_config(["serve.poll_interval_s=2"]).serve)
>>> s.max_body_bytes, s.max_audio_s
(16777216, 60.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from seqflow.errors import ConfigError


@dataclass(frozen=True)
class ServeSettings:
    """What the server needs to know besides the model URIs.

    poll_interval_s: seconds between registry polls (alias following).
    retry_initial_s / retry_max_s: back-off while MLflow is unreachable (doubles from initial to max).
    mlflow_timeout_s: HTTP timeout of one MLflow request [s] (the server never waits MLflow's
        default 120 s x 7 retries).
    max_body_bytes: largest REST request body [bytes] (413 past it).
    max_audio_s: longest REST audio [s] after decoding (413 past it).
    max_frame_bytes: largest WebSocket message [bytes] (the socket closes with 1009 past it).
    model_threads: threads that run model calls (the event loop never runs a model).
    torch_threads: torch intra-op threads (None: torch's default).
    max_pending: model calls queued or running at once; more → 503 ``busy``.
    vad_enabled / vad_threshold / vad_lookback_s / vad_warmup_s: the silero-vad gate
        (see :mod:`seqflow.serve.vad`).
    """

    poll_interval_s: float = 10.0
    retry_initial_s: float = 1.0
    retry_max_s: float = 60.0
    mlflow_timeout_s: float = 10.0
    max_body_bytes: int = 16 * 1024 * 1024
    max_audio_s: float = 60.0
    max_frame_bytes: int = 1024 * 1024
    model_threads: int = 2
    torch_threads: int | None = None
    max_pending: int = 32
    vad_enabled: bool = False
    vad_threshold: float = 0.5
    vad_lookback_s: float = 1.5
    vad_warmup_s: float = 0.5

    def __post_init__(self) -> None:
        positive = ("poll_interval_s", "retry_initial_s", "retry_max_s", "mlflow_timeout_s", "max_body_bytes",
                    "max_audio_s", "max_frame_bytes", "model_threads", "max_pending", "vad_lookback_s")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"serve: {name} must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.vad_threshold <= 1.0:
            raise ConfigError(f"serve.vad.threshold must be in [0, 1], got {self.vad_threshold!r}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"serve.concurrency.torch_threads must be >= 1 or null, got {self.torch_threads!r}")

    @classmethod
    def from_config(cls, serve: Mapping[str, Any] | None) -> "ServeSettings":
        """Build from the ``serve:`` config section (missing keys take the defaults above).

        Raises:
            ConfigError: a value out of range (the message names the key).
        """
        s = dict(serve or {})
        limits, conc = dict(s.get("limits") or {}), dict(s.get("concurrency") or {})
        retry, vad = dict(s.get("mlflow_retry") or {}), dict(s.get("vad") or {})
        raw = {
            "poll_interval_s": s.get("poll_interval_s"),
            "retry_initial_s": retry.get("initial_s"), "retry_max_s": retry.get("max_s"),
            "mlflow_timeout_s": retry.get("timeout_s"),
            "max_body_bytes": None if limits.get("max_body_mb") is None else int(float(limits["max_body_mb"]) * 2**20),
            "max_audio_s": limits.get("max_audio_s"), "max_frame_bytes": limits.get("max_frame_bytes"),
            "model_threads": conc.get("model_threads"), "max_pending": conc.get("max_pending"),
            "vad_enabled": vad.get("enabled"), "vad_threshold": vad.get("threshold"),
            "vad_lookback_s": vad.get("lookback_s"), "vad_warmup_s": vad.get("warmup_s"),
        }
        ints = {"max_body_bytes", "max_frame_bytes", "model_threads", "max_pending"}
        kwargs: dict[str, Any] = {}
        for k, v in raw.items():
            if v is None:
                continue
            try:
                kwargs[k] = bool(v) if k == "vad_enabled" else (int(v) if k in ints else float(v))
            except (TypeError, ValueError) as e:
                raise ConfigError(f"serve: {k} must be a number, got {v!r}") from e
        if conc.get("torch_threads") is not None:
            kwargs["torch_threads"] = int(conc["torch_threads"])
        return cls(**kwargs)


def check_port(port: object) -> int:
    """``port`` (``--port`` or ``serve.port``) as an int in [1, 65535].

    Raises:
        ConfigError: not an integer, or out of range (the message names ``serve.port``).
    """
    try:
        value = int(str(port))
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise ConfigError(f"serve.port={port!r}: must be an integer in [1, 65535]")
    return value
