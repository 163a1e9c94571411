"""Descriptions of a registered model and its versions (Markdown, as the MLflow UI shows them):
what the model is, how versions are gated, and where each version came from. Used by
:func:`seqflow.tracking.registry.register_and_promote` (re-exported there)."""

from __future__ import annotations

from seqflow.tracking.runs import short_version


def model_description(kind: str, model_name: str, family: str, subject: str, metric_key: str,
                      lower_is_better: bool = True, challenger_alias: str = "challenger",
                      champion_alias: str = "champion", extra: str | None = None) -> str:
    """The registered model's description (Markdown, as the MLflow UI shows it): what the model
    is, what its pyfunc takes and returns, and how versions are gated.

    ``kind``: ``trigger_word`` (``subject`` = the trigger phrase) or ``asr`` (``subject`` = the
    data source). ``extra``: a sentence appended as is (e.g. ``cfg.model.description``).

    >>> model_description("trigger_word", "tw", "my.family", "activate", "test/frr").splitlines()[0]
    'Trigger-word detector for "activate" (seqflow model `tw`, family `my.family`).'
    """
    if kind == "trigger_word":
        what = (f'Trigger-word detector for "{subject}" (seqflow model `{model_name}`, family `{family}`).\n\n'
                "pyfunc input: a 16 kHz mono float32 waveform `(S,)`; output: a DataFrame of detections "
                "(`start`, `end` [s], `score`) at the threshold packaged with the version, calibrated on "
                "the val split (tag `calibration.met` says whether the false-accept target was met).")
    else:
        what = (f"Speech recognizer trained on `{subject}` data (seqflow model `{model_name}`, family "
                f"`{family}`).\n\npyfunc input: a 16 kHz mono float32 waveform `(S,)`; output: the transcript.")
    better = "lower" if lower_is_better else "higher"
    gate = (f"\n\nGate: every version registered is aliased `{challenger_alias}`; `{champion_alias}` moves "
            f"to it only when its `{metric_key}` is strictly {better} than the champion's, measured on the "
            "same test set (run tag `eval.test_set`, a content hash); ties and different test sets keep the "
            "champion. Each version's description and tags say which data it was trained on and why it was "
            "promoted or kept.")
    return what + gate + (f"\n\n{extra.strip()}" if extra and extra.strip() else "")


def version_description(run_name: str | None, run_id: str, data_md5: str | None, git_commit: str | None,
                        metric_key: str, metric: float, test_set_id: str | None, decision: str,
                        reason: str) -> str:
    """A model version's description: the run and data it came from, its gate metric, the decision.

    >>> version_description("m-activate-35e1343", "abc", "35e1343b.dir", "f00d", "test/frr", 0.25,
    ...                     "sha256:9f", "promoted", "no champion yet").splitlines()[0]
    'Trained in run `m-activate-35e1343` (`abc`) on data version `35e1343` (DVC md5 `35e1343b.dir`, git `f00d`).'
    """
    return (f"Trained in run `{run_name or run_id}` (`{run_id}`) on data version `{short_version(data_md5)}` "
            f"(DVC md5 `{data_md5 or 'unknown'}`, git `{git_commit or 'unknown'}`).\n\n"
            f"Gate: `{metric_key}` = {metric:.6g} on test set `{test_set_id or 'unknown'}`; {decision}: {reason}.")
