"""``seqflow`` command line. Hydra overrides follow the command::

    seqflow pipeline data.trigger_word="hey jarvis" ray.num_workers=2 trainer.max_epochs=3
    seqflow detect clip.wav                     # the configured trigger word's champion
    seqflow evaluate models:/seqflow-trigger-word-activate@champion
    seqflow ui
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import List, Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="seqflow: orchestrated, versioned, distributed training for speech sequence models.")

OVERRIDES = typer.Argument(None, help="Hydra overrides, e.g. data.trigger_word=hello trainer.max_epochs=3")
_OPTIONS = {"verbose": False}


@app.callback()
def _global_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="show the traceback of a config "
                                                                               "error (otherwise one line, exit 2)")) -> None:
    """seqflow: orchestrated, versioned, distributed training for speech sequence models."""
    _OPTIONS["verbose"] = verbose


def _config_errors(command: str):
    """A bad config value (seqflow, Hydra or OmegaConf error) → one line on stderr, exit 2."""
    from seqflow.schema.oneline import reported

    return reported(command, _OPTIONS["verbose"])


def _setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # explicit, so seqflow's lines survive ray.init(logging_config=...) lowering the root logger
    logging.getLogger("seqflow").setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")


def _tracking_uri(uri: Optional[str]) -> str:
    if uri:
        return uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    from seqflow.config import load_config

    return load_config([]).tracking.tracking_uri


@app.command()
def pipeline(overrides: Optional[List[str]] = OVERRIDES,
             wait: bool = typer.Option(False, "--wait", help="queue behind another seqflow pipeline running in "
                                                             "this workdir instead of failing at once"),
             no_cache: bool = typer.Option(False, "--no-cache", help="run every stage again instead of reusing "
                                                                     "finished ones (same config, data, commit)")) -> None:
    """Run the whole Prefect flow: prepare → validate → version → shard → train → evaluate → register.
    One pipeline per workdir at a time (lock file ``.seqflow.lock``); finished stages are reused."""
    _setup_logging()
    from seqflow.lock import WorkdirLockedError
    from seqflow.schema import check_overrides

    with _config_errors("pipeline"):
        check_overrides(overrides or [])  # before Prefect is imported: a bad value fails in about a second
        from seqflow.flow import run_pipeline
        from seqflow.stage_timeout import reported as timeout_reported

        try:
            with timeout_reported("pipeline", _OPTIONS["verbose"]):  # past flow.timeouts.<stage>: one line, 124
                run_pipeline(overrides or [], wait=wait, no_cache=no_cache)
        except WorkdirLockedError as e:
            typer.echo(f"seqflow pipeline: {e}", err=True)
            raise typer.Exit(2)
        except KeyboardInterrupt as e:  # SIGINT/SIGTERM: state marked and lock released by now
            from seqflow.fault_state import exit_line

            line, code = exit_line(e)
            typer.echo(line, err=True)
            raise typer.Exit(code)  # 130 / 143


@app.command()
def prepare(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Build the corpus and validate it (no versioning, no training)."""
    _setup_logging()
    from seqflow import stages
    from seqflow.config import load_config

    with _config_errors("prepare"):
        cfg = load_config(overrides or [])
        stages.check_config(cfg)
    typer.echo(f"manifest: {stages.prepare(cfg)}")
    typer.echo(f"validate: {stages.validate(cfg)}")


def _open_all(files: List[str], command: str) -> list:
    """Open every file (header check) before any model loads; a bad one → one line naming it, exit 2.
    Files are then read block by block (bounded memory, any length; docs/long-audio.md)."""
    from seqflow.errors import AudioDecodeError
    from seqflow.serve.long_audio import open_audio

    readers = []
    for path in files:
        try:
            readers.append((path, open_audio(path)))
        except AudioDecodeError as e:
            _decode_error(command, e)
    return readers


def _decode_error(command: str, e) -> None:
    typer.echo(f"seqflow {command}: {e.path}: {e.reason} ({e.detail})", err=True)
    raise typer.Exit(2)


def _load_pyfunc(model: str, tracking_uri: Optional[str]):
    import mlflow

    mlflow.set_tracking_uri(_tracking_uri(tracking_uri))
    return mlflow.pyfunc.load_model(model)


AUDIO_FILES = typer.Argument(..., help="WAV/FLAC/OGG files (any rate; resampled to 16 kHz mono)")
TRACKING = typer.Option(None, help="MLflow tracking URI (default: the project's store)")
PROGRESS = typer.Option(None, "--progress/--no-progress", help="a progress bar over the audio on stderr (default: "
                                                               "shown when stderr is a terminal; stdout stays clean)")


def _show_progress(progress: Optional[bool]) -> bool:
    return sys.stderr.isatty() if progress is None else progress


@app.command()
def detect(audio: List[str] = AUDIO_FILES,
           model: Optional[str] = typer.Option(None, help="MLflow model URI (default: the configured trigger "
                                                          "word's champion, models:/seqflow-trigger-word-<slug>@champion)"),
           tracking_uri: Optional[str] = TRACKING, progress: Optional[bool] = PROGRESS) -> None:
    """Print each trigger-word detection (start/end seconds, score) for each audio file (any length:
    read in blocks and streamed through the detector, bounded memory)."""
    from seqflow.errors import AudioDecodeError
    from seqflow.serve.long_audio import detect_file, unwrap

    readers = _open_all(audio, "detect")
    detector = unwrap(_load_pyfunc(model or _champion_uri("trigger_word"), tracking_uri), "detector")
    for path, reader in readers:
        try:
            dets = detect_file(detector, reader, progress=_show_progress(progress))
        except AudioDecodeError as e:
            _decode_error("detect", e)
        typer.echo(f"{path}: {len(dets)} detection(s)")
        for d in dets:
            typer.echo(f"  start={d['start']:7.2f}s  end={d['end']:7.2f}s  score={d['score']:.3f}")


@app.command()
def transcribe(audio: List[str] = AUDIO_FILES,
               model: str = typer.Option("models:/seqflow-asr-ctc@champion", help="MLflow model URI"),
               tracking_uri: Optional[str] = TRACKING, progress: Optional[bool] = PROGRESS) -> None:
    """Print one transcript per audio file (``path<TAB>transcript``); any length: read in blocks,
    transcribed in overlapping windows and joined (bounded memory, docs/long-audio.md)."""
    from seqflow.errors import AudioDecodeError
    from seqflow.serve.long_audio import transcribe_file, unwrap

    readers = _open_all(audio, "transcribe")
    transcriber = unwrap(_load_pyfunc(model, tracking_uri), "transcriber")
    for path, reader in readers:
        try:
            text = transcribe_file(transcriber, reader, progress=_show_progress(progress))
        except AudioDecodeError as e:
            _decode_error("transcribe", e)
        typer.echo(f"{path}\t{text}")


def _champion_uri(kind: str) -> str:
    """``models:/<configured registered name>@champion`` (trigger word: the configured phrase's)."""
    from seqflow.config import load_config

    cfg = load_config([] if kind == "trigger_word" else [f"model={kind}"])
    return f"models:/{cfg.model.registered_name}@{cfg.tracking.champion_alias}"


def _check_config_first(overrides: List[str]) -> None:
    """Compose and type-check ``overrides`` (:func:`seqflow.schema.check_schema`) before any MLflow
    call; without ``model=``, ``model.*`` overrides wait for the version's own model (checked later)."""
    from seqflow.config import load_config
    from seqflow.schema import check_schema

    own_model = any(o.lstrip("+~").startswith("model=") for o in overrides)
    check_schema(load_config([o for o in overrides if own_model or not o.lstrip("+~").startswith("model.")]))


@app.command()
def evaluate(model: str = typer.Argument(..., help="models:/<name>@<alias> or models:/<name>/<version>"),
             overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Re-evaluate a registered version on the current test split and evaluation sets, logging to
    its own run (how an old champion becomes comparable with a new test set)."""
    _setup_logging()
    from seqflow.reevaluate import reevaluate

    with _config_errors("evaluate"):
        _check_config_first(overrides or [])   # config errors before the (slow) model lookup
        result = reevaluate(model, overrides or [])
    for k, v in sorted(result["metrics"].items()):
        typer.echo(f"{k:<40} {v:.4g}")
    typer.echo(f"logged on run {result['run_id']} (eval.test_set {result['tags']['eval.test_set']})")


@app.command()
def ui(port: int = typer.Option(5000), host: str = typer.Option("127.0.0.1"),
       tracking_uri: Optional[str] = typer.Option(None)) -> None:
    """Open the MLflow UI on the project's tracking store (an ``http(s)`` tracking URI is an
    ``mlflow server``: it is the UI already, nothing is started)."""
    uri = _tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        typer.echo(f"the tracking server is the UI: open {uri}")
        raise typer.Exit(0)
    typer.echo(f"MLflow UI on http://{host}:{port} (store: {uri})")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def serve(model: Optional[List[str]] = typer.Option(
              None, "--model", "-m", help="models:/<name>@<alias> (followed) or models:/<name>/<version>; repeat "
                                          "for several models (default: serve.models, else the configured trigger "
                                          "word's champion)"),
          host: Optional[str] = typer.Option(None, help="bind address (default serve.host, 127.0.0.1); put "
                                                        "authentication in front with a reverse proxy"),
          port: Optional[int] = typer.Option(None, help="port (default serve.port, 8080)"),
          tracking_uri: Optional[str] = TRACKING,
          onnx: bool = typer.Option(False, "--onnx", help="run the models on onnxruntime (seqflow.export)"),
          overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Serve registered models (FastAPI + uvicorn): /v1/detect, /v1/transcribe, WebSocket /v1/stream,
    /health, /model, /metrics; follows the alias. Exit 2 when an alias does not exist (docs/serving.md)."""
    _setup_logging()
    from seqflow.serve.server import main as serve_main

    with _config_errors("serve"):
        code = serve_main(model or [], host, port, tracking_uri, onnx, overrides or [])
    raise typer.Exit(code)


@app.command()
def deploy(overrides: Optional[List[str]] = OVERRIDES,
           work_pool: Optional[str] = typer.Option(None, help="register to this Prefect work pool and exit "
                                                              "(a `prefect worker start --pool` runs the runs) "
                                                              "instead of serving from this process")) -> None:
    """Schedule the pipeline as a Prefect deployment (``flow.cron``, or ``flow.interval`` seconds;
    concurrency limit 1) and serve it from this process until Ctrl-C. Needs ``PREFECT_API_URL`` of
    a running ``prefect server start`` (the ephemeral API cannot schedule); docs/scheduling.md."""
    _setup_logging()
    from seqflow import deploy as deployment
    from seqflow.errors import ConfigError
    from seqflow.flow import compose_configs

    try:
        deployment.check_server(deployment.api_url())
        with _config_errors("deploy"):
            cfgs = compose_configs(overrides or [])
        typer.echo(f"seqflow deploy: {deployment.describe(cfgs)}")
        if work_pool:
            dep_id = deployment.register(cfgs, work_pool)
            typer.echo(f"seqflow deploy: registered deployment {dep_id} to work pool {work_pool!r}; "
                       f"run `prefect worker start --pool {work_pool}` to execute its runs")
        else:
            deployment.serve(cfgs)
    except (deployment.DeployError, ConfigError) as e:
        typer.echo(f"seqflow deploy: {e}", err=True)
        raise typer.Exit(2)


@app.command()
def export(model: str = typer.Argument(..., help="models:/<name>@<alias>, models:/<name>/<version>, runs:/<id>/model, "
                                                 "or a downloaded model / serving package folder"),
           fmt: str = typer.Option("onnx", "--format", help="export format (onnx)"),
           out: Optional[str] = typer.Option(None, help="export folder (default exports/<name>-v<version>)"),
           tracking_uri: Optional[str] = TRACKING) -> None:
    """Export a trigger-word detector or CTC recognizer to ONNX (front end inside the graph), checked
    against PyTorch; run it with seqflow.export.load_onnx_model or seqflow serve --onnx."""
    from seqflow.errors import SeqflowError
    from seqflow.export import export_onnx

    if "://" in model or model.startswith(("models:", "runs:")):
        import mlflow

        mlflow.set_tracking_uri(_tracking_uri(tracking_uri))
    try:
        path = export_onnx(model, out, fmt=fmt)
    except SeqflowError as e:
        typer.echo(f"seqflow export: {e}", err=True)
        raise typer.Exit(2)
    import json

    meta = json.loads((path / "onnx_model.json").read_text())
    typer.echo(f"{path}: {meta['model']} ({meta['kind']}), max |ONNX - PyTorch| = {meta['check']['max_abs_diff']:.2g} "
               f"({meta['check']['compared']}, {meta['check']['probe_seconds']:.0f} s probe)")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
