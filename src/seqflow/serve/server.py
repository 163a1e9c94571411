"""``seqflow serve``: check the config and the model URIs, then run the app under uvicorn.

Start-up rules, in this order (config errors come before any MLflow call):

* the config (overrides, ``serve.*``, ``--port``) is checked first: a bad value → exit code 2 with
  one line naming the key, the value and what is allowed;
* every ``--model`` must be ``models:/<name>@<alias>`` (followed) or ``models:/<name>/<version>``
  (pinned), each registered name once;
* the tracking URI is ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``tracking.tracking_uri``
  of the config (``MLFLOW_TRACKING_URI`` wins over the config, as in MLflow);
* when MLflow answers and an alias (or version, or registered model) does not exist → exit code 2
  with one line per URI listing the aliases that do exist;
* when MLflow does not answer → start anyway: ``/health`` says ``unavailable`` (503) and the
  models load as soon as MLflow answers (retry with back-off, ``serve.mlflow_retry``);
* ``--onnx`` without :mod:`seqflow.export` → exit code 2.

>>> main(["models:/seqflow-trigger-word-emb-activate@champion"], host="127.0.0.1", port=8080)
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from seqflow.errors import ConfigError
from seqflow.serve.models import AliasMissing, MlflowUnreachable, ModelRef, ModelSlot, resolve
from seqflow.serve.settings import ServeSettings, check_port

log = logging.getLogger("seqflow.serve")
EXIT_USAGE = 2


def _fail(message: str) -> int:
    print(f"seqflow serve: {message}", file=sys.stderr)
    return EXIT_USAGE


def check_refs(refs: Sequence[ModelRef], tracking_uri: str) -> list[str]:
    """One problem line per ref whose alias/version/model does not exist (empty when all exist or
    MLflow does not answer; the latter is logged and left to the follower's back-off)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    problems = []
    for ref in refs:
        try:
            mv = resolve(client, ref)
            log.info("%s → version %s", ref.uri, mv.version)
        except AliasMissing as e:
            problems.append(str(e))
        except MlflowUnreachable as e:
            log.warning("%s; starting anyway (/health says unavailable until MLflow answers)", e)
            break
    return problems


def main(models: Sequence[str], host: str | None = None, port: int | None = None, tracking_uri: str | None = None,
         onnx: bool = False, overrides: Sequence[str] = ()) -> int:
    """Serve ``models`` until interrupted; returns the process exit code (0, or 2 for bad start-up
    input with one line on stderr). Defaults: ``serve.host`` / ``serve.port`` / ``serve.models`` of
    the config, and the configured trigger word's champion when no model is named anywhere."""
    from seqflow.config import load_config
    from seqflow.schema import check_schema

    try:  # every config error first, in one line, before any MLflow call (a model lookup can be slow)
        cfg = load_config(list(overrides))
        check_schema(cfg)   # type and range of every value, serve.* included
        serve_cfg = cfg.get("serve") or {}
        settings = ServeSettings.from_config(serve_cfg)
        host = host or str(serve_cfg.get("host") or "127.0.0.1")
        port = check_port(port if port is not None else serve_cfg.get("port") or 8080)
    except ConfigError as e:
        return _fail(str(e))
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors name the bad override
        return _fail(f"bad config override: {str(e).splitlines()[0]}")
    uris = list(models) or list(serve_cfg.get("models") or []) or [
        f"models:/{cfg.model.registered_name}@{cfg.tracking.champion_alias}"]
    try:
        refs = [ModelRef.parse(u) for u in uris]
    except ConfigError as e:
        return _fail(str(e))
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        return _fail(f"each registered model can be served once; got {', '.join(uris)}")
    if onnx:
        try:
            import seqflow.export  # noqa: F401
        except ImportError:
            return _fail("--onnx needs seqflow.export (ONNX export), which this install does not have")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or str(cfg.tracking.tracking_uri)
    # one MLflow request must never hang the follower for MLflow's default 7 retries x 120 s
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(settings.mlflow_timeout_s))))
    problems = check_refs(refs, uri)
    if problems:
        for p in problems:
            print(f"seqflow serve: {p}", file=sys.stderr)
        return EXIT_USAGE

    import uvicorn

    from seqflow.serve.app import create_app

    app = create_app([ModelSlot(r) for r in refs], settings, tracking_uri=uri, onnx=onnx)
    log.info("serving %s on http://%s:%d (MLflow: %s)", ", ".join(uris), host, port, uri)
    config = uvicorn.Config(app, host=host, port=port, ws_max_size=settings.max_frame_bytes,
                            timeout_graceful_shutdown=5, log_level="info", access_log=False)
    server = uvicorn.Server(config)
    server.run()
    return 0 if server.started else 1
