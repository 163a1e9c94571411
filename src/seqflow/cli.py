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
def pipeline(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Run the whole Prefect flow: prepare → validate → version → shard → train → evaluate → register."""
    _setup_logging()
    from seqflow.flow import run_pipeline

    run_pipeline(overrides or [])


@app.command()
def prepare(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Build the corpus and validate it (no versioning, no training)."""
    _setup_logging()
    from seqflow import stages
    from seqflow.config import load_config

    cfg = load_config(overrides or [])
    stages.check_config(cfg)
    typer.echo(f"manifest: {stages.prepare(cfg)}")
    typer.echo(f"validate: {stages.validate(cfg)}")


def _read_all(files: List[str], command: str) -> list:
    """Decode every file before any model loads; a bad one → one line naming it, exit 2."""
    from seqflow.audio.io import read_audio
    from seqflow.errors import AudioDecodeError

    waves = []
    for path in files:
        try:
            waves.append((path, read_audio(path, target_sr=16000)[0]))
        except AudioDecodeError as e:
            typer.echo(f"seqflow {command}: {e.path}: {e.reason} ({e.detail})", err=True)
            raise typer.Exit(2)
    return waves


def _load_pyfunc(model: str, tracking_uri: Optional[str]):
    import mlflow

    mlflow.set_tracking_uri(_tracking_uri(tracking_uri))
    return mlflow.pyfunc.load_model(model)


AUDIO_FILES = typer.Argument(..., help="WAV/FLAC/OGG files (any rate; resampled to 16 kHz mono)")
TRACKING = typer.Option(None, help="MLflow tracking URI (default: the project's store)")


@app.command()
def detect(audio: List[str] = AUDIO_FILES,
           model: Optional[str] = typer.Option(None, help="MLflow model URI (default: the configured trigger "
                                                          "word's champion, models:/seqflow-trigger-word-<slug>@champion)"),
           tracking_uri: Optional[str] = TRACKING) -> None:
    """Print each trigger-word detection (start/end seconds, score) for each audio file."""
    waves = _read_all(audio, "detect")
    pyfunc = _load_pyfunc(model or _champion_uri("trigger_word"), tracking_uri)
    for path, wav in waves:
        dets = pyfunc.predict(wav)
        typer.echo(f"{path}: {len(dets)} detection(s)")
        for row in dets.itertuples(index=False):
            typer.echo(f"  start={row.start:7.2f}s  end={row.end:7.2f}s  score={row.score:.3f}")


@app.command()
def transcribe(audio: List[str] = AUDIO_FILES,
               model: str = typer.Option("models:/seqflow-asr-ctc@champion", help="MLflow model URI"),
               tracking_uri: Optional[str] = TRACKING) -> None:
    """Print one transcript per audio file (``path<TAB>transcript``)."""
    waves = _read_all(audio, "transcribe")
    pyfunc = _load_pyfunc(model, tracking_uri)
    for path, wav in waves:
        text = pyfunc.predict(wav)["text"].iloc[0]
        typer.echo(f"{path}\t{text}")


def _champion_uri(kind: str) -> str:
    """``models:/<configured registered name>@champion`` (trigger word: the configured phrase's)."""
    from seqflow.config import load_config

    cfg = load_config([] if kind == "trigger_word" else [f"model={kind}"])
    return f"models:/{cfg.model.registered_name}@{cfg.tracking.champion_alias}"


@app.command()
def evaluate(model: str = typer.Argument(..., help="models:/<name>@<alias> or models:/<name>/<version>"),
             overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Re-evaluate a registered version on the current test split and evaluation sets, logging to
    its own run (how an old champion becomes comparable with a new test set)."""
    _setup_logging()
    from seqflow.reevaluate import reevaluate

    result = reevaluate(model, overrides or [])
    for k, v in sorted(result["metrics"].items()):
        typer.echo(f"{k:<40} {v:.4g}")
    typer.echo(f"logged on run {result['run_id']} (eval.test_set {result['tags']['eval.test_set']})")


@app.command()
def ui(port: int = typer.Option(5000), host: str = typer.Option("127.0.0.1"),
       tracking_uri: Optional[str] = typer.Option(None)) -> None:
    """Open the MLflow UI on the project's tracking store."""
    uri = _tracking_uri(tracking_uri)
    typer.echo(f"MLflow UI on http://{host}:{port} (store: {uri})")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    raise typer.Exit(subprocess.call(cmd))


@app.command()
def serve(model: Optional[str] = typer.Argument(None, help="MLflow model URI (default: the configured "
                                                          "trigger word's champion)"),
          port: int = typer.Option(5001), host: str = typer.Option("127.0.0.1"),
          tracking_uri: Optional[str] = typer.Option(None)) -> None:
    """Serve a registered model over REST (``mlflow models serve``): POST /invocations {"inputs": [...]}."""
    # mlflow runs `uvicorn` by name: put this interpreter's bin dir on PATH (venv not activated)
    env = dict(os.environ, MLFLOW_TRACKING_URI=_tracking_uri(tracking_uri),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model or _champion_uri("trigger_word"), "--env-manager", "local",
           "-h", host, "-p", str(port)]
    raise typer.Exit(subprocess.call(cmd, env=env))


@app.command()
def deploy(overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Serve the pipeline as a Prefect deployment on ``flow.cron`` (needs ``PREFECT_API_URL`` of a
    running ``prefect server start``; the ephemeral API cannot schedule)."""
    _setup_logging()
    from seqflow.flow import compose_configs
    from seqflow.flow import pipeline as flow_fn

    cfgs = compose_configs(overrides or [])
    if not os.environ.get("PREFECT_API_URL"):
        typer.echo("seqflow deploy: set PREFECT_API_URL to a Prefect server (prefect server start)", err=True)
        raise typer.Exit(2)
    flow_fn.serve(name=cfgs[0]["flow"]["deployment_name"], cron=cfgs[0]["flow"]["cron"],
                  parameters={"cfgs": cfgs})


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
