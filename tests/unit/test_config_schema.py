"""The config schema and pre-flight checks (seqflow.schema): one line naming key, value and what
is allowed, before any work; real Hydra composition, real espeak-ng, the real filesystem."""

from __future__ import annotations

import re

import pytest
from omegaconf import OmegaConf

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.schema import check_schema, flatten, rule_for
from seqflow.schema.resources import check_disk_space, check_local_ray_resources, estimate_bytes, machine_cpus
from seqflow.schema.speakable import check_trigger_word_speakable, scripts, voices_that_speak


@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc': must be an integer >= 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be an integer >= 1"),
    ("trainer.max_epochs=true", "trainer.max_epochs=true: must be an integer >= 1"),
    ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5: must be an integer >= 1"),
    ("model.batch_size=0", "model.batch_size=0: must be an integer >= 1"),
    ("augment.train.clip.reverb.p=1.5", "augment.train.clip.reverb.p=1.5: must be a number >= 0 and <= 1"),
    ("augment.utterances.noise.p=-0.1", "augment.utterances.noise.p=-0.1: must be a number >= 0 and <= 1"),
    ("clips.positive_gain_db=[3,-6]", "clips.positive_gain_db=[3, -6]: must be [lo, hi]: two numbers, lo <= hi "
                                      "(lo 3 > hi -6)"),
    ("augment.rooms.rt60=[0.2]", "augment.rooms.rt60=[0.2]: must be [lo, hi]: two numbers, lo <= hi, each > 0"),
    ("shards.format=mp3", "shards.format='mp3': must be one of flac, wav"),
    ("ray.use_gpu=maybe", "ray.use_gpu='maybe': must be true or false"),
    ("ray.cpus_per_worker=0", "ray.cpus_per_worker=0: must be a number > 0"),
    ("evaluate.max_confusable_trigger_rate=2", "evaluate.max_confusable_trigger_rate=2: must be a number >= 0 and "
                                               "<= 1 or null"),
    ("data.max_bad_fraction=abc", "data.max_bad_fraction='abc': must be a number >= 0 and <= 1"),
    ("model.optim.lr=0", "model.optim.lr=0: must be a number > 0"),
    ("serve.port=70000", "serve.port=70000: must be an integer >= 1 and <= 65535"),
    ("augment.rooms.dims_min=[3,3]", "augment.rooms.dims_min=[3, 3]: must be a list of 3 item(s)"),
    ("data.min_duration=200", "data.min_duration=200: must be < data.max_duration=120.0"),
])
def test_bad_value_names_key_value_and_what_is_allowed(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        check_schema(load_config([override]))
    assert str(err.value) == message


@pytest.mark.parametrize("overrides", [[], ["model=trigger_word"], ["model=ctc"], ["model=transformer"],
                                       ["trainer=gpu", "ray.use_gpu=true"], ["ray=cluster"], ["tracking=server"],
                                       ["clips.hard_negative_mining.threshold=null", "trainer.torch_threads=null"]])
def test_shipped_configs_pass(overrides: list[str]) -> None:
    cfg = load_config(overrides)
    check_schema(cfg)
    assert len(list(flatten(OmegaConf.to_container(cfg, resolve=True)))) > 100  # the whole tree is walked


def test_exact_key_wins_over_pattern() -> None:
    assert type(rule_for("model.features.normalize")).__name__ == "Enum"
    assert type(rule_for("model.features.n_mels")).__name__ == "Float"
    assert rule_for("model.no_such.key") is None


def test_workdir_that_is_a_file_is_refused(tmp_path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"^workdir='.*afile': must be a folder; it is a file$"):
        check_schema(load_config([f"workdir={f}"]))


def test_local_ray_needs_the_cpus_it_asks_for() -> None:
    n = machine_cpus() + 1
    with pytest.raises(ConfigError) as err:
        check_local_ray_resources(load_config([f"ray.num_workers={n}"]))
    assert str(err.value).startswith(f"ray.num_workers={n} x ray.cpus_per_worker=1: needs {n} CPUs, but local Ray "
                                     f"has {machine_cpus()} (this machine has {machine_cpus()} CPU(s))")
    with pytest.raises(ConfigError, match=r"needs 4 CPUs, but local Ray has 2 \(ray.num_cpus=2\)"):
        check_local_ray_resources(load_config(["ray.num_workers=2", "ray.cpus_per_worker=2", "ray.num_cpus=2"]))
    check_local_ray_resources(load_config(["ray.num_workers=1"]))  # fits
    check_local_ray_resources(load_config([f"ray.num_workers={n}", "ray.address=auto"]))  # a cluster may autoscale


def test_local_ray_gpus(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ConfigError, match=r"^ray.use_gpu=true with ray.num_workers=1: needs 1 GPU\(s\), this machine "
                                          r"has 0"):
        check_local_ray_resources(load_config(["ray.use_gpu=true", "ray.num_workers=1"]))


def test_disk_space_names_path_needed_and_free(tmp_path) -> None:
    cfg = load_config([f"workdir={tmp_path}", "clips.train_clips=1000000000"])
    with pytest.raises(ConfigError) as err:
        check_disk_space(cfg)
    msg = str(err.value)
    assert msg.startswith(f"not enough disk space at {tmp_path}: needs ")
    assert re.search(r"needs \d+ bytes \(352 TB: .*\), \d+ bytes \([\d.]+ [kMGTP]?B\) free; ", msg)
    assert f"shards.root={tmp_path}/shards" in msg and f"data.root={tmp_path}/data" in msg
    check_disk_space(load_config([f"workdir={tmp_path}"]))  # the default fits here


def test_estimate_of_a_user_source_is_its_size(tmp_path) -> None:
    src = tmp_path / "recordings"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.wav").write_bytes(b"\0" * 1000)
    (src / "y.wav").write_bytes(b"\0" * 500)
    est = estimate_bytes(load_config([f"workdir={tmp_path}", "data=folder", f"data.path={src}", "model=ctc"]))
    assert est == {"corpus": 1650, "shards": 1650}  # 1500 bytes + 10 %, ASR shards hold the utterances again


def test_trigger_word_the_voices_cannot_speak_names_voices_that_can() -> None:
    with pytest.raises(ConfigError) as err:
        check_trigger_word_speakable(load_config(["data.trigger_word='привет'"]))
    msg = str(err.value)
    assert msg.startswith("data.trigger_word='привет': the configured voices espeak en-us, ")
    assert "piper joe" in msg and "CYRILLIC" in msg and "espeak-ng voices that can: " in msg
    assert "data.accents=[ru] data.num_voices=12 data.tts_engines=[espeak]" in msg
    check_trigger_word_speakable(load_config(["data.trigger_word='привет'", "data.accents=[ru, uk]",
                                              "data.tts_engines=[espeak]"]))
    for word in ("activate", "hey jarvis", "café olé"):  # Latin script: English voices read it
        check_trigger_word_speakable(load_config([f"data.trigger_word='{word}'"]))


def test_scripts_and_voices_for_them() -> None:
    from seqflow.data.tts import EspeakTTS

    assert scripts("hey привет") == {"LATIN", "CYRILLIC"}
    can = voices_that_speak(EspeakTTS(), "αλφα")
    assert "el" in can and "en-us" not in can
