"""Rooms, channels and levels: the transforms, the Augmenter's skip rules, the RIR banks, and
augmented trigger-word clips (deterministic, disjoint rooms per split, segment times that move)."""

import numpy as np
import pyroomacoustics as pra
import pytest
import scipy.signal as ss
import soundfile as sf

import seqflow.audio.augment as augment_mod
from seqflow.audio.augment import (Augmenter, band_limit, change_speed, compand, mix_noise, reverberate,
                                   set_level, stage_config, telephone)
from seqflow.audio.rooms import RirBank, RoomSpec, room_rir
from seqflow.errors import ConfigError, ShardError

SR = 16000


def _noise(seconds=1.0, seed=0, scale=0.1):
    return (scale * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def _band_energy(x, lo, hi):
    f, p = ss.welch(x, fs=SR, nperseg=1024)
    return float(p[(f >= lo) & (f < hi)].sum())


# --- rooms ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dims,rt60", [([4.0, 3.0, 2.5], 0.3), ([8.0, 6.0, 3.5], 0.6), ([5.0, 4.0, 3.0], 0.9)])
def test_an_impulse_through_a_simulated_room_has_the_rooms_rt60(dims, rt60):
    rir, delay = room_rir(dims, rt60, [1.0, 1.2, 1.6], [3.0, 2.4, 1.2], SR, np.random.default_rng(0))
    assert rir.dtype == np.float32 and np.sum(rir.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-4)
    assert int(np.argmax(np.abs(rir))) == delay  # direct path at the stated index
    x = np.zeros(2 * SR, dtype=np.float32)
    x[SR // 10] = 1.0
    y = reverberate(x, rir, delay)
    assert len(y) == len(x) and int(np.argmax(np.abs(y))) == SR // 10  # timing kept
    for decay_db in (20, 30):
        measured = pra.experimental.measure_rt60(y[SR // 10:], fs=SR, decay_db=decay_db)
        assert measured == pytest.approx(rt60, rel=0.15)


def test_bank_is_deterministic_cached_bit_identical_and_banks_are_disjoint(tmp_path):
    spec = RoomSpec()
    train = RirBank.load_or_build(tmp_path, "train", 12, seed=5)
    path = RirBank.cache_path(tmp_path, "train", 12, 5)
    assert path.is_file() and path.name.startswith("rirs-train-s5-n12-")
    cached = RirBank.load_or_build(tmp_path, "train", 12, seed=5)
    fresh = RirBank.build("train", 12, seed=5)
    for other in (cached, fresh):
        assert len(other) == 12 and all(np.array_equal(a, b) for a, b in zip(train.rirs, other.rirs))
        assert np.array_equal(train.delays, other.delays) and np.array_equal(train.rt60, other.rt60)
    assert np.all((train.rt60 >= spec.rt60[0]) & (train.rt60 <= spec.rt60[1]))
    assert np.all((train.distance > 0.1) & np.all(train.dims >= np.array(spec.dims_min) - 1e-9))
    evalb = RirBank.load_or_build(tmp_path, "eval", 12, seed=5)
    assert not train.digests() & evalb.digests()
    assert not {tuple(d) for d in train.dims} & {tuple(d) for d in evalb.dims}
    assert RirBank.build("train", 3, seed=6).digests().isdisjoint(train.digests())  # another seed, other rooms
    path.write_bytes(b"not an npz")  # a damaged cache is rebuilt, not trusted
    assert all(np.array_equal(a, b) for a, b in zip(RirBank.load_or_build(tmp_path, "train", 12, 5).rirs, train.rirs))
    with pytest.raises(ConfigError, match="unknown key"):
        RoomSpec.from_config({"rt60": [0.2, 0.5], "walls": 4})


# --- transforms -----------------------------------------------------------------------------

def test_speed_1_1_shortens_by_1_over_1_1_and_moves_segment_times():
    x = np.zeros(2 * SR, dtype=np.float32)
    x[int(0.5 * SR):int(1.1 * SR)] = _noise(0.6, scale=0.3)  # a "word" from 0.5 s to 1.1 s
    aug = Augmenter({"speed": {"p": 1.0, "factor": [1.1, 1.1]}}, SR)
    y, segs, speed = aug.apply(x, np.random.default_rng(0), [{"kind": "positive", "start": 0.5, "end": 1.1}])
    assert speed == pytest.approx(1.1) and abs(len(y) - 2 * SR / 1.1) <= 1
    assert segs[0]["start"] == pytest.approx(0.5 / 1.1) and segs[0]["end"] == pytest.approx(1.0)
    loud = np.flatnonzero(np.abs(y) > 0.02) / SR
    assert loud.min() == pytest.approx(segs[0]["start"], abs=0.01)
    assert loud.max() == pytest.approx(segs[0]["end"], abs=0.01)
    assert abs(len(change_speed(x, SR, 0.9)) - 2 * SR / 0.9) <= 1


def test_telephone_removes_energy_above_4_khz_and_companding_is_8_bit():
    x = _noise(2.0, scale=0.2)
    assert _band_energy(x, 4200, 8000) > 0.4 * _band_energy(x, 0, 8000)
    for law in ("mu", "a"):
        y = telephone(x, SR, law)
        assert len(y) == len(x) and np.isfinite(y).all()
        assert _band_energy(y, 4200, 8000) < 1e-4 * _band_energy(y, 0, 8000)
        assert _band_energy(y, 500, 3000) > 0.5 * _band_energy(x, 500, 3000)
        c = compand(np.linspace(-1, 1, 10001), law)
        assert len(np.unique(c)) <= 255 and np.abs(c - np.linspace(-1, 1, 10001)).max() < 0.05
    with pytest.raises(ConfigError, match="law"):
        compand(x, "b")


def test_band_limit_eq_gain_and_noise_keep_finite_values_at_the_asked_levels():
    x = _noise(1.0)
    y = band_limit(x, SR, lowpass_hz=3000, highpass_hz=300)
    assert _band_energy(y, 5000, 8000) < 1e-3 * _band_energy(y, 500, 2500)
    assert _band_energy(y, 0, 100) < 1e-2 * _band_energy(y, 500, 2500)
    aug = Augmenter({"eq": {"p": 1.0, "gain_db": [-6, 6]}, "gain": {"p": 1.0, "dbfs": [-40, -15]}}, SR)
    for seed in range(20):
        y = aug(x, np.random.default_rng(seed))
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        level = 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)))
        assert -40 - 1e-3 <= level <= -15 + 1e-3 and aug.last[-1]["dbfs"] == pytest.approx(level, abs=0.01)
    assert aug.applied == {"eq": 20, "gain": 20} and not aug.skipped
    assert 20 * np.log10(np.sqrt(np.mean(set_level(x, -26.0) ** 2))) == pytest.approx(-26.0, abs=1e-3)
    tone = (0.1 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    mixed = mix_noise(tone, _noise(0.3, seed=1), 10.0, np.random.default_rng(0))  # short noise loops
    snr = 10 * np.log10(np.mean(tone ** 2) / np.mean((mixed - tone) ** 2))
    assert snr == pytest.approx(10.0, abs=0.05)


def test_pitch_shift_keeps_length_and_moves_the_pitch():
    t = np.arange(SR // 2) / SR
    x = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    y = Augmenter({"pitch": {"p": 1.0, "semitones": [2, 2]}}, SR)(x, np.random.default_rng(0))
    f, p = ss.welch(y, fs=SR, nperseg=4096)
    assert len(y) == len(x) and f[np.argmax(p)] == pytest.approx(300 * 2 ** (2 / 12), abs=8)


def test_nan_silence_or_empty_rir_is_skipped_and_counted(monkeypatch):
    x = _noise(0.5)
    for dbfs, why in ((800.0, "overflow to inf"), (-200.0, "silence")):
        aug = Augmenter({"gain": {"p": 1.0, "dbfs": [dbfs, dbfs]}}, SR)
        y = aug(x, np.random.default_rng(0))
        assert np.array_equal(y, x) and y is not x, why
        assert aug.skipped == {"gain": 1} and not aug.applied and aug.last == []
    monkeypatch.setattr(augment_mod, "equalize", lambda wav, sr, bands: np.full_like(wav, np.nan))
    empty = RirBank("train", [np.zeros(0, np.float32)], np.zeros(1, int), np.ones(1), np.ones((1, 3)), np.ones(1))
    aug = Augmenter({"reverb": {"p": 1.0}, "eq": {"p": 1.0}, "gain": {"p": 1.0, "dbfs": [-30, -30]}}, SR, rirs=empty)
    y = aug(x, np.random.default_rng(0))
    assert aug.skipped == {"reverb": 1, "eq": 1} and aug.applied == {"gain": 1} and np.isfinite(y).all()
    assert np.array_equal(Augmenter({"gain": {"p": 1.0}}, SR)(np.zeros(100, np.float32), np.random.default_rng(0)),
                          np.zeros(100, np.float32))  # silence in: nothing to shape


def test_config_errors_are_named():
    with pytest.raises(ConfigError, match="unknown transform 'echo'"):
        Augmenter({"echo": {"p": 1.0}}, SR)
    with pytest.raises(ConfigError, match=r"augment\.train\.clip\.eq: unknown key\(s\) \['gains'\]"):
        Augmenter({"eq": {"p": 1.0, "gains": [1, 2]}}, SR, where="augment.train.clip")
    with pytest.raises(ConfigError, match="not a probability"):
        Augmenter({"gain": {"p": 1.5}}, SR)
    with pytest.raises(ConfigError, match="no RIR bank"):
        Augmenter({"reverb": {"p": 0.5}}, SR)
    with pytest.raises(ConfigError, match="speed changes apply to words only"):
        stage_config({"speed": {"p": 0.5}}, "augment.train.clip", no_speed=True)
    assert not Augmenter({"noise": {"p": 1.0}}, SR)  # no recordings: noise cannot fire


# --- augmented clips ----------------------------------------------------------------------------

AUG = {
    "enabled": True, "rir_bank_size": 6, "noise_dirs": [],
    "rooms": {"rt60": [0.3, 0.8]},
    "train": {"words": {"speed": {"p": 1.0, "factor": [1.1, 1.1]}},
              "clip": {"reverb": {"p": 1.0}, "eq": {"p": 0.5}, "gain": {"p": 1.0, "dbfs": [-30, -20]}}},
    "eval": {"words": {}, "clip": {"reverb": {"p": 1.0}, "noise": {"p": 1.0}}},
}


def _source(tmp_path, augment):
    from test_shards_clips import make_corpus, make_source

    data = tmp_path / "data"
    if not data.exists():
        data.mkdir()
        make_corpus(data)
    aug = None if augment is None else {**augment, "cache_dir": str(tmp_path / "cache")}
    return make_source(data, augment=aug)


def test_augmented_clips_are_byte_identical_across_runs_and_differ_from_plain_ones(tmp_path):
    from seqflow.shards.writer import write_shards

    runs = []
    for run in range(2):
        src = _source(tmp_path, AUG)  # the second run reads the cached banks
        out = tmp_path / f"run{run}" / "train"
        runs.append(write_shards(src.clips("train"), out, "train", 10**9, 1, progress=False))
        assert src.augmenters("train")[1].applied["reverb"] == 6
    assert [e["sha256"] for e in runs[0]["shards"]] == [e["sha256"] for e in runs[1]["shards"]]
    plain, augmented = list(_source(tmp_path, None).clips("train")), list(_source(tmp_path, AUG).clips("train"))
    off = list(_source(tmp_path, {**AUG, "enabled": False}).clips("train"))
    for p, a, o in zip(plain, augmented, off):
        assert not np.array_equal(p["audio"], a["audio"]) and len(a["audio"]) == len(p["audio"])
        assert np.array_equal(p["audio"], o["audio"]) and p["json"] == o["json"]  # off is the old method
        assert np.isfinite(a["audio"]).all() and np.abs(a["audio"]).max() <= 1.0
        assert [t["name"] for t in a["json"]["augment"]][0] == "reverb" and "augment" not in p["json"]


def test_speed_moves_segment_ends_in_clips_and_keeps_the_label_window(tmp_path):
    src = _source(tmp_path, AUG)
    lengths = {len(w) for w, _ in src._pool("train", "positive") + src._pool("train", "negative")}
    for s in src.clips("train"):
        segs = s["json"]["segments"]
        for g in segs:  # every placed word is 1.1 x faster than its render
            n = round((g["end"] - g["start"]) * SR)
            assert any(abs(n - length / 1.1) <= 1 for length in lengths)
            after = [h for h in segs if g["end"] <= h["start"] < g["end"] + src.label_seconds]
            assert g["kind"] == "negative" or not after
    assert src.augmenters("train")[0].applied["speed"] > 0


def test_val_and_test_use_the_eval_bank_and_no_training_noise(tmp_path):
    noise_dir = tmp_path / "noise" / "sub"
    noise_dir.mkdir(parents=True)
    sf.write(noise_dir / "hum.wav", _noise(1.0, seed=3), SR)
    cfg = {**AUG, "noise_dirs": [str(tmp_path / "noise")],
           "train": {**AUG["train"], "clip": {**AUG["train"]["clip"], "noise": {"p": 1.0, "snr_db": [5, 5]}}}}
    src = _source(tmp_path, cfg)
    banks = {}
    for split in ("train", "val", "test"):
        for s in src.clips(split):
            names = [t["name"] for t in s["json"]["augment"]]
            rooms = [t for t in s["json"]["augment"] if t["name"] == "reverb"]
            banks.setdefault(split, set()).update(t["bank"] for t in rooms)
            assert ("noise" in names) == (split == "train")
    assert banks == {"train": {"train"}, "val": {"eval"}, "test": {"eval"}}
    assert src.augmenters("val")[1].rirs is src.augmenters("test")[1].rirs or \
        src.augmenters("val")[1].rirs.digests() == src.augmenters("test")[1].rirs.digests()
    assert src.augmenters("train")[1].rirs.digests().isdisjoint(src.augmenters("val")[1].rirs.digests())
    bad = _source(tmp_path, {**cfg, "noise_dirs": [str(tmp_path / "nope")]})
    with pytest.raises(ShardError, match="noise_dirs: .*nope is not a folder"):
        list(bad.clips("train"))


def test_shipped_config_builds_its_augmenters(tmp_path):
    from test_shards_clips import make_corpus

    from seqflow.config import load_config
    from seqflow.shards.clips import ClipSource

    (tmp_path / "data").mkdir()
    make_corpus(tmp_path / "data")
    cfg = load_config([f"augment.cache_dir={tmp_path}/cache", "augment.rir_bank_size=4", "augment.optional_noise_dirs=[]", "clips.duration=3.0",
                       "clips.train_clips=2", "clips.val_clips=2"])
    assert cfg.augment.enabled and cfg.augment.noise_dirs == []
    src = ClipSource.from_config(cfg, tmp_path / "data")
    for split in ("train", "val"):
        words, clip = src.augmenters(split)
        assert "reverb" in clip.active and "gain" in clip.active and "noise" not in clip.active
        assert ("speed" in words.active) == (split == "train")
        assert [s["__key__"] for s in src.clips(split)] == [f"{split}-000000", f"{split}-000001"]
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir()) == ["eval", "train"]
