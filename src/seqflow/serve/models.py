"""Served models: load ``models:/<name>@<alias>`` from the MLflow registry and follow the alias.

Each ``--model`` URI gets a :class:`ModelSlot`. An :class:`AliasFollower` thread polls the registry
every ``poll_interval_s``: when the alias points at another version, that version is loaded next to
the one serving and swapped in atomically (requests in flight finish on the old one). When the
alias is removed, or MLflow stops answering, the loaded version keeps serving and the slot says so
(``/health``). While MLflow is unreachable the follower retries with a doubling back-off
(``retry_initial_s`` → ``retry_max_s``).

A version is loaded with ``mlflow.pyfunc.load_model("models:/<name>/<version>")`` (the exact
version the alias named, so the version that answers is always known); its family comes from the
pyfunc's MLmodel metadata ``seqflow.model`` and decides its task (:data:`TASKS`).

>>> slot = ModelSlot(ModelRef.parse("models:/seqflow-trigger-word-emb-activate@champion"))
>>> AliasFollower([slot], settings, "http://127.0.0.1:5000").start()
>>> slot.current.version, slot.current.task                       # ('3', 'detect')
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seqflow.errors import ConfigError, SeqflowError

log = logging.getLogger("seqflow.serve")

TASKS = {"trigger_word": "detect", "trigger_word_embedding": "detect", "ctc": "transcribe", "transformer": "transcribe"}
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
_RUN_METRIC_PREFIXES = ("test/", "val/", "eval/", "calibration/")
_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


class AliasMissing(SeqflowError):
    """The registered model or its alias does not exist (the message lists the aliases that do)."""


class MlflowUnreachable(SeqflowError):
    """The tracking server / registry store did not answer."""


@dataclass(frozen=True)
class ModelRef:
    """A parsed ``models:/<name>@<alias>`` (followed) or ``models:/<name>/<version>`` (pinned) URI."""

    uri: str
    name: str
    alias: str | None
    version: str | None

    @classmethod
    def parse(cls, uri: str) -> "ModelRef":
        """Raises: ConfigError naming the expected forms."""
        m = _URI.match(uri.strip())
        if not m:
            raise ConfigError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
        return cls(uri.strip(), m["name"], m["alias"], m["version"])


@dataclass
class LoadedModel:
    """One loaded version. engine: the detector (``detect``) or transcriber (``transcribe``);
    info: what ``GET /model`` shows (gate metrics, data version, run, threshold, ...)."""

    ref: ModelRef
    version: str
    family: str
    task: str
    engine: Any
    sample_rate: int
    info: dict = field(default_factory=dict)


def _existing_aliases(client, name: str) -> str:
    try:
        aliases = client.get_registered_model(name).aliases
    except Exception:  # noqa: BLE001 - only used to word the message
        return "none (no such registered model)"
    return ", ".join(f"{a} (v{v})" for a, v in sorted(aliases.items())) or "none"


def _classify(exc: Exception, client, ref: ModelRef) -> SeqflowError:
    """An MLflow failure → :class:`AliasMissing` (the store answered "no such thing") or
    :class:`MlflowUnreachable` (anything else: connection refused, timeout, 5xx)."""
    code = getattr(exc, "error_code", None)
    msg = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    if code in _MISSING_CODES and "API request to" not in msg:
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        return AliasMissing(f"{ref.uri}: {what} of registered model {ref.name!r} does not exist; "
                            f"aliases that do: {_existing_aliases(client, ref.name)}")
    return MlflowUnreachable(f"MLflow did not answer for {ref.uri}: {msg}")


def resolve(client, ref: ModelRef):
    """The ModelVersion that ``ref`` names now.

    Raises:
        AliasMissing: no such registered model, alias or version. MlflowUnreachable: otherwise.
    """
    try:
        if ref.alias:
            return client.get_model_version_by_alias(ref.name, ref.alias)
        return client.get_model_version(ref.name, ref.version)
    except Exception as e:  # noqa: BLE001 - classified below
        raise _classify(e, client, ref) from e


def version_info(client, name: str, mv) -> dict:
    """What ``GET /model`` reports about a version: gate metric and decision (version tags written by
    :func:`seqflow.tracking.registry.register_and_promote`), data version, git commit, and the
    ``test/``, ``val/``, ``eval/``, ``calibration/`` metrics of the version's run (absent when the run is gone)."""
    tags = dict(mv.tags or {})
    info: dict[str, Any] = {"run_id": mv.run_id, "source": mv.source, "status": tags.get("seqflow.status")}
    gate_value = tags.get("gate.metric")
    try:
        gate_value = None if gate_value is None else float(gate_value)
    except ValueError:
        pass
    info["gate"] = {"metric_key": tags.get("gate.metric_key"), "value": gate_value,
                    "decision": tags.get("promotion.decision"), "reason": tags.get("promotion.reason")}
    info["data_version"] = tags.get("data.dvc_md5")
    info["git_commit"] = tags.get("git.commit")
    info["test_set"] = tags.get("eval.test_set")
    info["metrics"] = {}
    if mv.run_id:
        try:
            run = client.get_run(mv.run_id)
            info["metrics"] = {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith(_RUN_METRIC_PREFIXES)}
            info["data_version"] = info["data_version"] or run.data.tags.get("data.dvc_md5")
            info["git_commit"] = info["git_commit"] or run.data.tags.get("git.commit")
        except Exception as e:  # noqa: BLE001 - a deleted run leaves the version servable
            info["run_error"] = str(e).splitlines()[0][:200]
    return info


def onnx_engine(ref: ModelRef, version: str, family: str, engine: Any) -> Any:
    """The onnxruntime twin of ``engine`` (same methods: ``detect``/``stream`` or ``transcribe``),
    exported on the fly by :func:`seqflow.export.load_onnx_model` (cached by package content).
    The Transformer recognizer has no ONNX export (its attention decoder stays PyTorch): it keeps
    ``engine``.

    Raises:
        SeqflowError: the export failed (the message names the model).
    """
    if family == "transformer":
        log.warning("%s v%s: no ONNX export for the Transformer recognizer; it runs on PyTorch", ref.name, version)
        return engine
    from seqflow.export import load_onnx_model

    return load_onnx_model(f"models:/{ref.name}/{version}")


def load_version(client, ref: ModelRef, mv, onnx: bool = False) -> LoadedModel:
    """Load version ``mv`` of ``ref.name`` as a pyfunc and pick its engine by family.

    Raises:
        SeqflowError: the model is not a seqflow model (no or unknown ``seqflow.model`` metadata).
        MlflowUnreachable / other exceptions from MLflow: the artifacts could not be fetched.
    """
    import mlflow

    with warnings.catch_warnings():  # MLflow's "add type hints to predict" hint, once per load
        warnings.simplefilter("ignore", UserWarning)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{ref.name}/{mv.version}", suppress_warnings=True)
    family = str((pyfunc.metadata.metadata or {}).get("seqflow.model", ""))
    task = TASKS.get(family)
    if task is None:
        raise SeqflowError(f"{ref.name} v{mv.version} is not a seqflow model (MLmodel metadata seqflow.model="
                           f"{family or 'absent'}; known: {', '.join(TASKS)})")
    wrapper = pyfunc.unwrap_python_model()
    engine = wrapper_engine(wrapper, task)
    if onnx:
        engine = onnx_engine(ref, str(mv.version), family, engine)
    info = version_info(client, ref.name, mv)
    info.update(engine="pytorch" if engine is wrapper_engine(wrapper, task) else "onnxruntime",
                loaded_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    if task == "detect":
        info.update(threshold=float(engine.threshold), refractory_s=float(engine.refractory_s))
    return LoadedModel(ref, str(mv.version), family, task, engine, int(engine.sample_rate), info)


def wrapper_engine(wrapper, task: str) -> Any:
    """The PyTorch engine inside a seqflow pyfunc wrapper."""
    return wrapper.detector if task == "detect" else wrapper.transcriber


class ModelSlot:
    """One ``--model`` URI: the version serving now (``current``, swapped atomically) and what the
    registry said last. Thread-safe for readers: requests read ``current`` once and keep it."""

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        self.current: LoadedModel | None = None
        self.loading_version: str | None = None
        self.mlflow_reachable: bool | None = None
        self.alias_missing = False
        self.last_error: str | None = None
        self.last_check: float | None = None

    def refresh(self, client, loader: Callable[..., LoadedModel]) -> bool:
        """Ask the registry once; load the version the alias names if it is not the one serving.
        Returns True when a new version was swapped in. Never raises (errors go to ``last_error``)."""
        try:
            mv = resolve(client, self.ref)
        except AliasMissing as e:
            self.mlflow_reachable, self.last_check = True, time.time()
            if not self.alias_missing:
                log.warning("%s", e)
            self.alias_missing, self.last_error = True, str(e)
            return False
        except MlflowUnreachable as e:
            if self.mlflow_reachable is not False:
                log.warning("%s", e)
            self.mlflow_reachable, self.last_error = False, str(e)
            return False
        self.mlflow_reachable, self.alias_missing, self.last_check = True, False, time.time()
        version = str(mv.version)
        if self.current is not None and self.current.version == version:
            self.last_error = None
            return False
        self.loading_version = version
        t0 = time.monotonic()
        try:
            new = loader(client, self.ref, mv)
        except Exception as e:  # noqa: BLE001 - keep serving the old version
            self.last_error = f"loading {self.ref.name} v{version} failed: {str(e).splitlines()[0][:300] if str(e) else e!r}"
            log.error("%s", self.last_error)
            return False
        finally:
            self.loading_version = None
        old = self.current.version if self.current else None
        self.current, self.last_error = new, None
        log.info("%s: serving version %s (was %s; loaded in %.1f s)", self.ref.uri, version, old, time.monotonic() - t0)
        return True

    def status(self) -> dict:
        """``{"uri", "name", "alias", "state", "version", "mlflow_reachable", "alias_missing", "detail"}``;
        state: ``ready`` | ``loading`` | ``mlflow_unreachable`` | ``alias_missing`` | ``load_failed``;
        ``stale`` is True when the version serving may no longer be the one the registry names."""
        cur = self.current
        if cur is not None:
            state = "ready"
            if self.alias_missing:
                detail = f"alias {self.ref.alias!r} was removed from {self.ref.name}; still serving version {cur.version}"
            elif self.mlflow_reachable is False:
                detail = f"MLflow is unreachable; still serving version {cur.version}"
            elif self.last_error:
                detail = f"{self.last_error}; still serving version {cur.version}"
            elif self.loading_version:
                detail = f"serving version {cur.version}; loading version {self.loading_version}"
            else:
                detail = f"serving version {cur.version}"
        elif self.loading_version:
            state, detail = "loading", f"loading version {self.loading_version}"
        elif self.mlflow_reachable is False:
            state, detail = "mlflow_unreachable", f"{self.last_error}; retrying with back-off"
        elif self.alias_missing:
            state, detail = "alias_missing", str(self.last_error)
        elif self.last_error:
            state, detail = "load_failed", self.last_error
        else:
            state, detail = "loading", "waiting for the registry"
        return {"uri": self.ref.uri, "name": self.ref.name, "alias": self.ref.alias, "state": state,
                "version": cur.version if cur else None, "task": cur.task if cur else None,
                "mlflow_reachable": self.mlflow_reachable, "alias_missing": self.alias_missing,
                "stale": cur is not None and (self.alias_missing or self.mlflow_reachable is False
                                              or self.last_error is not None),
                "detail": detail}


class AliasFollower:
    """Background thread: refresh every slot, then sleep ``poll_interval_s`` (or the back-off while
    MLflow is unreachable or a slot has nothing loaded). ``warmup()`` runs once first (errors are
    logged); ``on_refresh(slots)`` after each round."""

    def __init__(self, slots: Sequence[ModelSlot], tracking_uri: str, poll_interval_s: float, retry_initial_s: float,
                 retry_max_s: float, onnx: bool = False,
                 on_refresh: Callable[[Sequence[ModelSlot]], None] | None = None,
                 warmup: Callable[[], None] | None = None) -> None:
        self.slots, self.tracking_uri, self.onnx = list(slots), tracking_uri, onnx
        self.warmup = warmup
        self.poll_interval_s, self.retry_initial_s, self.retry_max_s = poll_interval_s, retry_initial_s, retry_max_s
        self.on_refresh = on_refresh
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seqflow-alias-follower", daemon=True)

    def start(self) -> "AliasFollower":
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loader(self, client, ref: ModelRef, mv) -> LoadedModel:
        return load_version(client, ref, mv, onnx=self.onnx)

    def _run(self) -> None:
        if self.warmup is not None:
            try:
                self.warmup()
            except Exception:  # noqa: BLE001 - serving without a warm-up beats not serving
                log.exception("serve warm-up failed")
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        backoff = self.retry_initial_s
        while not self._stop.is_set():
            for slot in self.slots:
                slot.refresh(client, self._loader)
            if self.on_refresh:
                self.on_refresh(self.slots)
            trouble = any(s.mlflow_reachable is False or s.current is None for s in self.slots)
            if trouble:
                wait, backoff = backoff, min(backoff * 2, self.retry_max_s)
            else:
                wait, backoff = self.poll_interval_s, self.retry_initial_s
            self._stop.wait(wait)
