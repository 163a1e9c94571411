"""The flow run's summary as a Prefect markdown artifact (key ``seqflow-summary``).

One artifact per flow run: for each model the flow trained, a link to its MLflow run and the
summary table :func:`seqflow.stages.format_summary` prints. The link is an ``http(s)`` URL into
the MLflow UI when the tracking URI is a server; for a local store (``sqlite:``, ``file:``) it is
the run id plus the ``seqflow ui`` line that serves that store, and the URL to open then.
"""

from __future__ import annotations

import json
import logging
from typing import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("seqflow.run_summary")

ARTIFACT_KEY = "seqflow-summary"
UI_URL = "http://127.0.0.1:5000"  # where `seqflow ui` serves a local store (its --host/--port defaults)


def _cell(value: object) -> str:
    """A markdown table cell: floats to 4 significant digits (as ``format_summary``), dicts and
    lists as JSON; ``|`` escaped and newlines flattened so the table stays one row a key."""
    text = (f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list))
            else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI URL of a run on an ``http(s)`` tracking server (credentials in the URI are
    dropped), else None."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    netloc = parts.netloc.rsplit("@", 1)[-1]
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def mlflow_link(tracking_uri: str, experiment_id: str | None, run_id: str) -> str:
    """Markdown naming an MLflow run: ``[run <id>](<url>)`` on a tracking server; on a local
    store the run id, the store, and how to open it (``seqflow ui`` then the local URL)."""
    url = run_url(tracking_uri, experiment_id, run_id) if experiment_id is not None else None
    if url:
        return f"[MLflow run `{run_id}`]({url})"
    exp = f", experiment `{experiment_id}`" if experiment_id is not None else ""
    where = (f"; open it with `seqflow ui` (store `{tracking_uri}`), then "
             f"{UI_URL}/#/experiments/{experiment_id}/runs/{run_id}" if experiment_id is not None
             else f"; open it with `seqflow ui` (store `{tracking_uri}`)")
    return f"MLflow run `{run_id}`{exp}{where}"


def summary_markdown(summaries: Iterable[Mapping[str, object]], tracking_uri: str,
                     experiment_ids: Mapping[str, str] | None = None) -> str:
    """The artifact's markdown: a heading per model with a link to its MLflow run (key
    ``mlflow_run_id``; other ``*run_id`` keys, e.g. the hard-negative-mining parent, get a line
    each) and a two-column ``| key | value |`` table of the whole summary.

    Args:
        summaries: what :func:`seqflow.flow.pipeline` returns (one dict per model).
        tracking_uri: the MLflow tracking URI the runs were logged to.
        experiment_ids: run id → experiment id (from MLflow); a run without one is named by id only.
    """
    experiment_ids = experiment_ids or {}
    parts = ["# seqflow pipeline"]
    for summary in summaries:
        parts.append(f"## {summary.get('model', 'model')} → {summary.get('registered_model', '?')} "
                     f"v{summary.get('version', '?')}")
        links = [(k, str(v)) for k, v in summary.items() if k.endswith("run_id") and v]
        links.sort(key=lambda kv: kv[0] != "mlflow_run_id")  # the registered run first
        for key, run_id in links:
            parts.append(f"- {key}: {mlflow_link(tracking_uri, experiment_ids.get(run_id), run_id)}")
        rows = ["| key | value |", "|---|---|"] + [f"| {_cell(k)} | {_cell(v)} |" for k, v in summary.items()]
        parts.append("\n".join(rows))
    return "\n\n".join(parts) + "\n"


def experiment_ids_of(tracking_uri: str, run_ids: Iterable[str]) -> dict[str, str]:
    """run id → experiment id, read from MLflow; a run that cannot be read is left out (logged)."""
    from mlflow import MlflowClient

    client, out = MlflowClient(tracking_uri=tracking_uri), {}
    for run_id in run_ids:
        try:
            out[run_id] = client.get_run(run_id).info.experiment_id
        except Exception as exc:  # noqa: BLE001 - the link degrades to the run id; the run itself is fine
            log.warning("summary artifact: cannot read MLflow run %s (%s)", run_id, str(exc).splitlines()[0])
    return out


def publish_summary(summaries: list[dict], tracking_uri: str, key: str = ARTIFACT_KEY) -> str:
    """Create the markdown artifact on the current flow run (``create_markdown_artifact``) and
    return its markdown. Must run inside a Prefect flow or task run."""
    from prefect.artifacts import create_markdown_artifact

    run_ids = {str(v) for s in summaries for k, v in s.items() if k.endswith("run_id") and v}
    markdown = summary_markdown(summaries, tracking_uri, experiment_ids_of(tracking_uri, run_ids))
    models = ", ".join(str(s.get("model")) for s in summaries)
    create_markdown_artifact(markdown=markdown, key=key, description=f"seqflow pipeline summary ({models})")
    return markdown
