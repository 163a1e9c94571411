"""Register a logged model and run the promotion gate (aliases ``challenger`` / ``champion``).

The gate (DESIGN §2 step 7): every new version becomes ``challenger``; ``champion`` moves to it
only if it is strictly better than the current champion on the same evaluation set. The
decision, both metrics and the reason are written on the challenger's run and on the version.
The registered model carries a description (what the model is, how it is gated:
:func:`model_description`); each version one of its own (data version, gate metric, decision).

>>> info = log_trigger_word_model(detector_dir, wav[:16000])          # inside the run
>>> d = register_and_promote(info.model_uri, "seqflow-trigger-word-activate", run_id,
...                          "test/frr", test_set_id="sha256:...")
>>> d.promoted, d.reason
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from seqflow.errors import ConfigError, SeqflowError
from seqflow.tracking import promotion_guard
from seqflow.tracking.descriptions import model_description, version_description  # noqa: F401 - re-exported
from seqflow.tracking.runs import TAG_DATA_MD5, TAG_GIT_COMMIT

TAG_TEST_SET = "eval.test_set"
TAG_STATUS = promotion_guard.TAG_STATUS  # on the model version: "registering" | "ready" | "failed"
TAG_DECISION = "promotion.decision"  # "promoted" | "kept"
TAG_REASON = "promotion.reason"
_MODEL_ID_URI = re.compile(r"^models:/(m-[0-9a-fA-F]+)$")


class RegistrationError(SeqflowError):
    """Registering a model version or recording the promotion decision failed."""


@dataclass
class PromotionDecision:
    """Outcome of :func:`register_and_promote`.

    version: the new model version (int); promoted: champion now points at it;
    challenger_metric / champion_metric: gate metric of each version's run (champion None when
    there was no champion or its run has no such metric); champion_version_before: int or None;
    reason: one human-readable sentence; comparable: both metrics come from the same test set.
    """

    name: str
    version: int
    promoted: bool
    challenger_metric: float
    champion_metric: float | None
    champion_version_before: int | None
    reason: str
    metric_key: str
    comparable: bool
    test_set_id: str | None


def _alias_version(client: MlflowClient, name: str, alias: str):
    """The ModelVersion behind ``name@alias``, or None when the alias is not set."""
    version = client.get_registered_model(name).aliases.get(alias)
    return None if version is None else client.get_model_version(name, str(version))


def _run_metric_and_test_set(client: MlflowClient, run_id: str | None, key: str):
    """(metric or None, eval.test_set tag or None) of a run; (None, None) if the run is gone."""
    if not run_id:
        return None, None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None, None
    return run.data.metrics.get(key), run.data.tags.get(TAG_TEST_SET)


def _registered_version(client: MlflowClient, name: str, run_id: str):
    """The newest READY version of ``name`` registered from ``run_id`` and not tagged
    ``seqflow.status=failed``, or None: registering the same run again reuses it (no duplicate
    versions when a register stage is retried or a pipeline re-run)."""
    try:
        found = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    ok = [v for v in found if v.status == "READY" and (v.tags or {}).get(TAG_STATUS) != "failed"]
    return max(ok, key=lambda v: int(v.version)) if ok else None


def _create_version(client: MlflowClient, model_uri: str, name: str, run_id: str, timeout_s: float,
                    description: str | None = None):
    """Create the registered model if needed (with ``description``; an existing one gets it when
    it differs) and a new version; wait until it is READY (a version still not READY after
    ``timeout_s`` is tagged ``seqflow.status=failed``)."""
    m = _MODEL_ID_URI.match(model_uri)
    if model_uri.startswith(("runs:/", "models:/")) and not m:
        raise RegistrationError(
            f"cannot register {model_uri!r} as {name!r}: pass the logged model's URI "
            "models:/m-<id> (model_info.model_uri) or a direct artifact URI"
        )
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
        if description is not None and client.get_registered_model(name).description != description:
            client.update_registered_model(name, description=description)
    mv = client.create_model_version(
        name, source=model_uri, run_id=run_id, model_id=m.group(1) if m else None,
        tags={TAG_STATUS: promotion_guard.REGISTERING}, await_creation_for=int(timeout_s),
    )
    deadline = time.monotonic() + timeout_s
    while mv.status != "READY":
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            _roll_back(client, name, int(mv.version), [], f"status {mv.status}: {mv.status_message}")
            raise RegistrationError(
                f"model version {name}/{mv.version} from {model_uri} is {mv.status} "
                f"({mv.status_message or 'no message'}) after {timeout_s:.0f} s"
            )
        time.sleep(1.0)
        mv = client.get_model_version(name, mv.version)
    return mv


def _decide(chal, champ, champ_version, champ_ts, chal_ts, lower_is_better, allow_test_set_change):
    """(promote, comparable, reason) — the gate rule, documented on register_and_promote."""
    if math.isnan(chal):
        return False, False, "challenger metric is NaN; never promoted"
    if champ_version is None:
        return True, False, "no champion yet; first version becomes champion"
    if champ is None or math.isnan(champ):
        return True, False, (f"champion v{champ_version} has no usable metric on its run; "
                             "challenger promoted")
    if champ_ts != chal_ts:
        if allow_test_set_change:
            return True, False, (f"test sets differ (champion {champ_ts!r}, challenger {chal_ts!r}); "
                                 "not comparable; challenger promoted because allow_test_set_change")
        return False, False, (f"test sets differ (champion {champ_ts!r}, challenger {chal_ts!r}); "
                              "not comparable; champion kept (re-evaluate it on the new test set)")
    better = chal < champ if lower_is_better else chal > champ
    op = "<" if lower_is_better else ">"
    if better:
        return True, True, f"challenger {chal:.6g} {op} champion {champ:.6g} (v{champ_version})"
    return False, True, f"challenger {chal:.6g} not {op} champion {champ:.6g} (v{champ_version}); kept"


def register_and_promote(
    model_uri: str,
    name: str,
    run_id: str,
    metric_key: str,
    lower_is_better: bool = True,
    challenger_alias: str = "challenger",
    champion_alias: str = "champion",
    client: MlflowClient | None = None,
    test_set_id: str | None = None,
    allow_test_set_change: bool = False,
    timeout_s: float = 300.0,
    description: str | None = None,
    concurrency: str = "auto",
    lock_timeout_s: float = 120.0,
) -> PromotionDecision:
    """Register ``model_uri`` as a new version of ``name``, alias it challenger, gate champion.

    A version already registered from ``run_id`` (READY, not tagged failed) is reused instead of
    creating a duplicate; the gate then runs again on it (a version that is champion stays so).

    Args:
        model_uri: ``models:/m-<id>`` from ``log_model`` (``model_info.model_uri``) or a direct
            artifact URI. ``runs:/`` and ``models:/<name>/<version>`` URIs are refused.
        run_id: the run that logged the model and holds ``metric_key`` (its latest value).
        test_set_id: identity of the evaluation set (e.g. ``"<data.dvc_md5>/test"``); written as
            run tag ``eval.test_set``. None → the run's existing ``eval.test_set`` tag (if any).
        description: the registered model's description (:func:`model_description`); set when
            the model is created and updated when it differs. None leaves it as it is.

    The gate, in order:
      1. challenger metric NaN → kept (never promoted);
      2. no champion yet → promoted;
      3. the champion's run is gone or lacks a finite ``metric_key`` → promoted (flagged
         ``comparable=False``): a champion whose quality is unknown cannot be defended;
      4. the champion's ``eval.test_set`` differs from the challenger's (None counts as a value)
         → NOT comparable: the champion is **kept** and the reason says so (no re-evaluation
         happens here; re-evaluate the champion on the new test set, or pass
         ``allow_test_set_change=True`` to promote the challenger, flagged ``comparable=False``);
      5. otherwise champion moves only if the challenger is strictly better
         (``<`` when ``lower_is_better``, else ``>``); ties keep the champion.

    Recorded on the run: tags ``promotion.decision`` (promoted|kept), ``promotion.reason``,
    ``promotion.version``, ``promotion.champion_version_before``, ``promotion.comparable``,
    ``eval.test_set``; metrics ``promotion/challenger_metric`` and (when known)
    ``promotion/champion_metric``. On the version: ``seqflow.status=ready``, the decision, the
    reason, ``gate.metric_key``, ``gate.metric``, ``eval.test_set``, ``data.dvc_md5``, ``git.commit``,
    and a description (:func:`version_description`: run, data version, gate metric, decision).

    Failure policy (never half a registered model): the run and its metric are checked before
    anything is created. If any step after the version is created fails, the aliases this call
    moved are restored to their previous versions (or removed), the version is KEPT but tagged
    ``seqflow.status=failed`` with ``seqflow.error`` (kept, not deleted, so the failure can be
    inspected; no alias points at it), and RegistrationError is raised naming the model, version
    and failed step, chained to the cause.

    Concurrent calls for one model (:mod:`seqflow.tracking.promotion_guard`) decide one after
    another, so the champion ends on the gate's best version. ``concurrency="auto"`` holds a
    per-model file lock next to a local store (``sqlite:///<file>``, ``file:``) around the steps
    from the version's creation to its ``ready`` tag, waiting at most ``lock_timeout_s`` s; on a
    server store (``http(s)``) it goes by version order instead: the new version (tagged
    ``seqflow.status=registering``) waits at most ``lock_timeout_s`` s until no lower version is
    still registering. ``"lock"`` / ``"order"`` force one.

    Raises:
        RegistrationError: run missing, metric missing, ``test_set_id`` contradicts the run's
            tag, registration not READY within ``timeout_s``, a later step failed (see above),
            the promotion lock not free within ``lock_timeout_s`` (nothing created then; names
            the lock file and its holder), or lower versions still registering after
            ``lock_timeout_s`` in version order (named; the new version is tagged failed).
        ValueError: unknown ``concurrency``, or ``"lock"`` on a server store.
    """
    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as e:
        raise RegistrationError(f"cannot register {name!r}: run {run_id} not found ({e.message})") from e
    chal_metric = run.data.metrics.get(metric_key)
    if chal_metric is None:
        raise RegistrationError(
            f"cannot register {name!r}: run {run_id} has no metric {metric_key!r} "
            f"(has: {sorted(run.data.metrics)})"
        )
    run_ts = run.data.tags.get(TAG_TEST_SET)
    if test_set_id is not None and run_ts is not None and run_ts != test_set_id:
        raise RegistrationError(
            f"run {run_id} tag {TAG_TEST_SET}={run_ts!r} contradicts test_set_id={test_set_id!r}"
        )
    chal_ts = test_set_id if test_set_id is not None else run_ts

    guard = promotion_guard.choose(client, name, concurrency, lock_timeout_s)
    turn = None
    if guard.ordered:
        def turn(version: int) -> None:
            promotion_guard.wait_for_turn(client, name, version, lock_timeout_s, stale_after_s=timeout_s + 60.0)
    try:
        with guard.held():
            return _register_and_gate(client, model_uri, name, run, metric_key, float(chal_metric), chal_ts,
                                      lower_is_better, challenger_alias, champion_alias,
                                      allow_test_set_change, timeout_s, description, turn)
    except promotion_guard.PromotionLockTimeout as e:
        raise RegistrationError(str(e)) from None


def _register_and_gate(client: MlflowClient, model_uri: str, name: str, run, metric_key: str, chal_metric: float,
                       chal_ts: str | None, lower_is_better: bool, challenger_alias: str, champion_alias: str,
                       allow_test_set_change: bool, timeout_s: float, description: str | None,
                       turn=None) -> PromotionDecision:
    """Create (or reuse) the version, wait for its ``turn`` (version order on server stores), run
    the gate, move the aliases, record the decision: the steps of :func:`register_and_promote`
    that the promotion guard serializes."""
    run_id = run.info.run_id
    reused = _registered_version(client, name, run_id)
    mv = reused or _create_version(client, model_uri, name, run_id, timeout_s, description)
    version = int(mv.version)
    if turn is not None:
        try:
            turn(version)
        except promotion_guard.PromotionLockTimeout as e:
            if reused is None:  # ours: recorded as a failed registration, never left half
                _roll_back(client, name, version, [], f"wait for turn: {e}")
                raise RegistrationError(f"{e}. Version tagged {TAG_STATUS}=failed; no alias moved.") from None
            raise
    moved: list[tuple[str, object]] = []  # (alias, previous ModelVersion or None)
    step = "read current aliases"
    try:
        prev_chal = _alias_version(client, name, challenger_alias)
        prev_champ = _alias_version(client, name, champion_alias)
        champ_version = int(prev_champ.version) if prev_champ is not None else None
        champ_metric, champ_ts = (None, None)
        if prev_champ is not None:
            step = f"read champion v{champ_version} run"
            champ_metric, champ_ts = _run_metric_and_test_set(client, prev_champ.run_id, metric_key)
        promote, comparable, reason = _decide(
            chal_metric, champ_metric, champ_version, champ_ts, chal_ts,
            lower_is_better, allow_test_set_change,
        )
        if champ_version == version:  # the run registered again (a retried or re-run register stage)
            promote, comparable, reason = True, True, f"v{version} (this run) is already champion; kept"
        decision = "promoted" if promote else "kept"

        step = "tag model version"
        vtags = {
            TAG_DECISION: decision, TAG_REASON: reason, "gate.metric_key": metric_key,
            "gate.metric": repr(float(chal_metric)), TAG_TEST_SET: str(chal_ts),
        }
        for key in (TAG_DATA_MD5, TAG_GIT_COMMIT):
            if key in run.data.tags:
                vtags[key] = run.data.tags[key]
        for k, v in vtags.items():
            client.set_model_version_tag(name, str(version), k, v)
        step = "describe model version"
        client.update_model_version(name, str(version), description=version_description(
            run.info.run_name, run_id, run.data.tags.get(TAG_DATA_MD5), run.data.tags.get(TAG_GIT_COMMIT),
            metric_key, float(chal_metric), chal_ts, decision, reason))

        step = f"set alias {challenger_alias}"
        moved.append((challenger_alias, prev_chal))
        promotion_guard.set_alias(client, name, challenger_alias, version)
        if promote:
            step = f"set alias {champion_alias}"
            moved.append((champion_alias, prev_champ))
            promotion_guard.set_alias(client, name, champion_alias, version)

        step = "log decision on run"
        tags = {
            TAG_DECISION: decision, TAG_REASON: reason, "promotion.version": str(version),
            "promotion.champion_version_before": "none" if champ_version is None else str(champ_version),
            "promotion.comparable": str(comparable).lower(),
        }
        if chal_ts is not None:
            tags[TAG_TEST_SET] = chal_ts
        now = int(time.time() * 1000)
        metrics = [Metric("promotion/challenger_metric", float(chal_metric), now, 0)]
        if champ_metric is not None:
            metrics.append(Metric("promotion/champion_metric", float(champ_metric), now, 0))
        client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
        client.set_model_version_tag(name, str(version), TAG_STATUS, "ready")
    except Exception as e:
        _roll_back(client, name, version, moved, f"{step}: {type(e).__name__}: {e}")
        raise RegistrationError(
            f"registering {name} v{version} from {model_uri} failed at step '{step}': {e}. "
            f"Version tagged {TAG_STATUS}=failed; aliases restored."
        ) from e
    return PromotionDecision(
        name=name, version=version, promoted=promote, challenger_metric=float(chal_metric),
        champion_metric=None if champ_metric is None else float(champ_metric),
        champion_version_before=champ_version, reason=reason, metric_key=metric_key,
        comparable=comparable, test_set_id=chal_ts,
    )


def _roll_back(client: MlflowClient, name: str, version: int, moved, error: str) -> None:
    """Best effort: restore moved aliases (reverse order), tag the version failed."""
    for alias, prev in reversed(moved):
        try:
            if prev is not None:
                client.set_registered_model_alias(name, alias, str(prev.version))
            else:
                client.delete_registered_model_alias(name, alias)
        except Exception:  # noqa: BLE001 - keep rolling back the rest
            pass
    for key, value in ((TAG_STATUS, "failed"), ("seqflow.error", error[:5000])):
        try:
            client.set_model_version_tag(name, str(version), key, value)
        except Exception:  # noqa: BLE001
            pass


def model_version(uri: str, client: MlflowClient | None = None):
    """The ModelVersion behind ``models:/<name>@<alias>`` or ``models:/<name>/<version>``.

    Raises:
        ConfigError: not a ``models:/`` URI. MlflowException: no such alias or version.
    """
    client = client or MlflowClient()
    if not uri.startswith("models:/"):
        raise ConfigError(f"{uri!r}: expected models:/<name>@<alias> or models:/<name>/<version>")
    ref = uri[len("models:/"):]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = ref.rpartition("/")
    return client.get_model_version(name, version)
