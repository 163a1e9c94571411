"""Stage limits in the config: every stage has a finite default in ``conf/flow/default.yaml``, and
the schema refuses a bad one in one line (``flow.timeouts.train=-1: must be a number > 0``)."""

from __future__ import annotations

import pytest

from seqflow.errors import ConfigError


@pytest.mark.parametrize("override, message", [
    ("flow.timeouts.train=-1", "flow.timeouts.train=-1: must be a number > 0"),
    ("flow.timeouts.train=abc", "flow.timeouts.train='abc': must be a number > 0"),
    ("flow.timeouts.evaluate=null", "flow.timeouts.evaluate=null: must be a number > 0"),
    ("flow.timeout_grace_s=0", "flow.timeout_grace_s=0: must be a number > 0"),
])
def test_bad_limits_are_one_line_config_errors(override: str, message: str) -> None:
    from seqflow.schema import check_overrides

    with pytest.raises(ConfigError) as err:
        check_overrides([override])
    assert str(err.value) == message


def test_every_stage_has_a_finite_default_limit() -> None:
    from seqflow.config import load_config
    from seqflow.stage_timeout import config_key, limits

    cfg = load_config([])
    stages = ("prepare", "validate", "version", "shard", "train", "start-mining-run", "mine", "record-mining",
              "check-eval-sets", "package", "evaluate", "register", "summary-artifact")
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    assert set(plain["flow"]["timeouts"]) == {config_key(s).rsplit(".", 1)[1] for s in stages}
    for stage in stages:
        limit, grace = limits(plain, stage)
        assert 0 < limit < float("inf") and 0 < grace < float("inf")
    assert limits(plain, "train")[0] >= 4 * 3600  # training gets hours
