"""The summary artifact's markdown (seqflow.run_summary) and the deployment's schedule and
concurrency settings (seqflow.deploy), without a server."""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest

from seqflow.deploy import DeployError, check_server, concurrency_config, make_schedule
from seqflow.errors import ConfigError
from seqflow.run_summary import mlflow_link, run_url, summary_markdown

SUMMARY = {
    "model": "trigger_word",
    "data.dvc_md5": "f666cdbaaabaf9f626544dc7fbeecf9e",
    "validate": {"valid": 111, "quarantined": 0},
    "val/threshold": 0.66,
    "test/frr": 0.7058823529411765,
    "mlflow_run_id": "1972e894bf19492f957e5841d51e43ac",
    "registered_model": "seqflow-trigger-word-activate",
    "version": 3,
    "aliases": ["challenger", "champion"],
    "promotion": "beats champion | by 0.1\non test/frr",
}


def _table_rows(markdown: str) -> dict[str, str]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| key |"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows[cells[0]] = cells[1]
    return rows


def test_markdown_table_has_every_key_formatted_like_the_printed_summary() -> None:
    md = summary_markdown([SUMMARY], "http://127.0.0.1:5000", {SUMMARY["mlflow_run_id"]: "7"})
    rows = _table_rows(md)
    assert list(rows) == list(SUMMARY)
    assert rows["test/frr"] == "0.7059" and rows["val/threshold"] == "0.66" and rows["version"] == "3"
    assert rows["aliases"] == '["challenger", "champion"]'
    assert rows["validate"] == '{"valid": 111, "quarantined": 0}'
    # a pipe or newline in a value cannot break the table
    assert rows["promotion"] == "beats champion \\| by 0.1 on test/frr"
    assert "## trigger_word → seqflow-trigger-word-activate v3" in md


def test_http_tracking_uri_gives_a_ui_link_without_credentials() -> None:
    run = SUMMARY["mlflow_run_id"]
    assert run_url("https://bob:secret@mlflow.example.org/mlflow/", "12", run) == (
        f"https://mlflow.example.org/mlflow/#/experiments/12/runs/{run}")
    md = summary_markdown([SUMMARY], "http://127.0.0.1:5123", {run: "4"})
    assert f"- mlflow_run_id: [MLflow run `{run}`](http://127.0.0.1:5123/#/experiments/4/runs/{run})" in md


def test_local_store_names_the_run_and_the_seqflow_ui_hint() -> None:
    run = SUMMARY["mlflow_run_id"]
    assert run_url("sqlite:////p/mlflow.db", "4", run) is None
    line = mlflow_link("sqlite:////p/mlflow.db", "4", run)
    assert f"MLflow run `{run}`, experiment `4`" in line
    assert "`seqflow ui`" in line and "sqlite:////p/mlflow.db" in line
    assert f"http://127.0.0.1:5000/#/experiments/4/runs/{run}" in line
    # an unreadable run (no experiment id) is still named, without a URL
    assert mlflow_link("http://127.0.0.1:5000", None, run) == (
        f"MLflow run `{run}`; open it with `seqflow ui` (store `http://127.0.0.1:5000`)")


def test_one_section_per_model_and_a_line_per_run_id() -> None:
    mined = {**SUMMARY, "model": "trigger_word_embedding", "mlflow_parent_run_id": "p" * 32,
             "round_1_run_id": "r" * 32, "mlflow_run_id": "m" * 32}
    md = summary_markdown([SUMMARY, mined], "file:///tmp/mlruns", {})
    assert md.count("## ") == 2 and md.count("| key | value |") == 2
    section = md.split("## trigger_word_embedding")[1]
    links = [line for line in section.splitlines() if line.startswith("- ")]
    assert [line.split(":")[0] for line in links] == ["- mlflow_run_id", "- mlflow_parent_run_id", "- round_1_run_id"]


def test_schedule_is_the_cron_or_the_interval() -> None:
    cron = make_schedule({"cron": "0 3 * * *", "timezone": "Europe/Berlin", "interval": None})
    assert cron.cron == "0 3 * * *" and cron.timezone == "Europe/Berlin"
    every = make_schedule({"cron": "0 3 * * *", "timezone": "UTC", "interval": 15})
    assert every.interval == timedelta(seconds=15)


@pytest.mark.parametrize("flow_cfg, words", [
    ({"cron": "61 3 * * *", "interval": None}, "Invalid cron string"),
    ({"cron": "0 3 * * *", "timezone": "Mars/Olympus", "interval": None}, "timezone"),
    ({"cron": "0 3 * * *", "interval": 0}, "positive number of seconds"),
    ({"cron": "0 3 * * *", "interval": "soon"}, "positive number of seconds"),
])
def test_bad_schedule_settings_are_one_line_config_errors(flow_cfg, words) -> None:
    with pytest.raises(ConfigError) as exc:
        make_schedule(flow_cfg)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_concurrency_limit_is_one_with_the_configured_collision_strategy() -> None:
    cfg = concurrency_config({"collision_strategy": "cancel_new"})
    assert cfg.limit == 1 and cfg.collision_strategy.value == "CANCEL_NEW"
    assert concurrency_config({}).collision_strategy.value == "ENQUEUE"
    with pytest.raises(ConfigError, match="ENQUEUE, CANCEL_NEW"):
        concurrency_config({"collision_strategy": "PARALLEL"})


def test_no_server_is_a_one_line_deploy_error() -> None:
    with pytest.raises(DeployError, match="PREFECT_API_URL is not set"):
        check_server(None)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DeployError) as exc:
        check_server(f"http://127.0.0.1:{port}/api", timeout_s=5)
    assert "unreachable" in str(exc.value) and "\n" not in str(exc.value)


def test_deploy_command_without_a_server_exits_2_with_one_line() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from seqflow.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        res = CliRunner().invoke(app, ["deploy", "model=trigger_word"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.startswith("seqflow deploy:")]
    assert len(lines) == 1 and "unreachable" in lines[0] and f"127.0.0.1:{port}" in lines[0], res.output
