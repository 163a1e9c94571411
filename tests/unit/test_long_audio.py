"""Long audio in bounded memory: the block reader, overlapping windows and their joins, the ASR
pyfunc's windowed path, and flat peak memory of ``seqflow transcribe`` / ``seqflow detect`` on
10 vs 20 minutes of real (TTS) speech in noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import soundfile as sf
import torch

from seqflow.audio.blocks import AudioBlocks
from seqflow.audio.io import read_audio
from seqflow.audio.resample import resample
from seqflow.data.tts import EspeakTTS
from seqflow.errors import AudioDecodeError
from seqflow.models.ctc import CTCModel
from seqflow.models.decoding import ctc_greedy_decode
from seqflow.models.trigger_word import TriggerWordNet
from seqflow.serve.detector import load_detector, save_detector
from seqflow.serve.long_form import _CTCJoiner, merge_words, transcribe_long, windows
from seqflow.serve.transcriber import load_transcriber, save_transcriber
from seqflow.text.tokenizers import CharTokenizer
from seqflow.tracking.pyfunc import log_asr_model, log_trigger_word_model
from _mlflow_store import mlflow_store

SR = 16000
SENTENCES = ["turn on the kitchen lights", "activate", "set a timer for ten minutes", "what is the weather",
             "activate the alarm", "play some music"]


@pytest.fixture(scope="module")
def speech_minute() -> np.ndarray:
    """One minute of espeak sentences in noise at 16 kHz."""
    tts, rng = EspeakTTS(), np.random.default_rng(5)
    out = (0.01 * rng.standard_normal(60 * SR)).astype(np.float32)
    for i in range(12):
        wav, sr = tts.render(SENTENCES[i % len(SENTENCES)], voice=["en-us+f3", "en-gb+m3", "en-us+m1"][i % 3])
        wav = resample(wav, sr, SR)
        at = int((0.5 + 4.9 * i) * SR)
        out[at:at + len(wav)] += 0.4 * wav[:60 * SR - at]
    return out


def test_block_reader_equals_whole_file_decode(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = (0.1 * rng.standard_normal((44100 * 5 + 123, 2))).astype(np.float32)
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 44100, subtype="PCM_16")
    whole, _ = read_audio(path, target_sr=SR)
    reader = AudioBlocks(path, target_sr=SR, block_s=0.7)
    blocks = list(reader)
    assert len(blocks) > 7 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    got = np.concatenate(blocks)
    assert got.shape == whole.shape and reader.duration_s == pytest.approx(5 + 123 / 44100)
    np.testing.assert_allclose(got, whole, atol=1e-5)
    same_rate = np.concatenate(list(AudioBlocks(path, target_sr=None, block_s=1.0)))
    np.testing.assert_allclose(same_rate, stereo.mean(axis=1), atol=1e-4)  # 16-bit rounding of the file


def test_block_reader_errors_name_file_and_reason(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="missing") as e:
        AudioBlocks(tmp_path / "nope.wav")
    assert e.value.path.endswith("nope.wav")
    (tmp_path / "text.wav").write_bytes(b"this is not audio")
    with pytest.raises(AudioDecodeError, match="unreadable"):
        AudioBlocks(tmp_path / "text.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), SR)
    with pytest.raises(AudioDecodeError, match="empty"):
        AudioBlocks(tmp_path / "empty.wav")
    sf.write(tmp_path / "nan.wav", np.array([0.0, np.nan, 0.0], np.float32), SR, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="nan_or_inf"):
        list(AudioBlocks(tmp_path / "nan.wav"))


def test_windows_cover_the_stream_with_overlap() -> None:
    x = np.arange(1000, dtype=np.float32)
    pieces = [x[i:i + n] for i, n in zip(range(0, 1000, 77), [77] * 13)]
    wins = list(windows(pieces, window=300, hop=240))
    assert [s for s, _ in wins] == [0, 240, 480, 720]
    assert all(len(w) == 300 for _, w in wins[:-1]) and wins[-1][0] + len(wins[-1][1]) == 1000
    for s, w in wins:
        np.testing.assert_array_equal(w, x[s:s + len(w)])
    assert [s for s, _ in windows([x[:250]], 300, 240)] == [0] and list(windows([x[:0]], 300, 240)) == []
    assert [s for s, _ in windows([x[:300]], 300, 240)] == [0]  # exactly one window: no empty tail


def _one_hot_path(rng, n_frames: int, vocab: int) -> torch.Tensor:
    """Peaky CTC log-probabilities: tokens of 1-3 frames separated by 0-4 blank frames."""
    path, t = [], 0
    while len(path) < n_frames:
        path += [0] * int(rng.integers(0, 5)) + [int(rng.integers(1, vocab))] * int(rng.integers(1, 4))
    lp = torch.full((n_frames, vocab), -20.0)
    lp[torch.arange(n_frames), torch.tensor(path[:n_frames])] = 0.0
    return lp.log_softmax(-1)


@pytest.mark.parametrize("beam", [1, 3])
def test_ctc_join_at_blank_frames_equals_whole_path(beam: int) -> None:
    rng = np.random.default_rng(1)
    lp = _one_hot_path(rng, 2000, 12)
    expected = ctc_greedy_decode(lp[None], blank=0)[0]
    joiner = _CTCJoiner(blank=0, beam_size=beam, token_prune=4)
    for f0 in range(0, 2000, 400):  # windows of 500 frames every 400 (the last one shorter)
        joiner.add(f0, lp[f0:f0 + 500])
    assert joiner.finish() == expected


def test_word_merge_keeps_overlap_words_once() -> None:
    left = "one two three four five six seven eight nine ten".split()
    right = "nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen".split()
    assert merge_words(left, right, 0.2, 0.2) == left + right[2:]
    # a misrecognised word in the overlap: the common run still aligns
    assert merge_words(left, "nine tan eleven twelve".split(), 0.4, 0.4)[-3:] == ["tan", "eleven", "twelve"]
    no_common = merge_words("a b c d e f g h i j".split(), "k l m n o p q r s t".split(), 0.2, 0.2)
    assert no_common == "a b c d e f g h i".split() + "l m n o p q r s t".split()


def _ctc_transcriber(root: Path):
    tok = CharTokenizer.from_texts(SENTENCES)
    tok.save(root / "tok")
    torch.manual_seed(0)
    cfg = {"name": "ctc", "features": {"sample_rate": SR, "n_fft": 512, "win_length": 400, "hop_length": 160,
                                       "n_mels": 40},
           "net": {"d_model": 32, "num_heads": 2, "num_layers": 1, "d_ff": 64, "dropout": 0.0},
           "decoding": {"beam_size": 1}}
    net = CTCModel(40, tok.vocab_size, **cfg["net"])
    with torch.no_grad():  # an untrained net whose tokens follow the audio
        torch.nn.init.normal_(net.ctc_head.bias, std=0.5)
        net.ctc_head.weight.mul_(5.0)
    return save_transcriber(root / "transcriber", net, cfg, root / "tok")


def test_long_transcription_windows_and_the_pyfunc_path(tmp_path: Path, speech_minute: np.ndarray) -> None:
    t = load_transcriber(_ctc_transcriber(tmp_path))
    short = speech_minute[:15 * SR]
    assert t.transcribe_long(short) == t.transcribe(short)  # within one window: the one-pass path
    text = t.transcribe_long(speech_minute)
    assert text and text == transcribe_long(t, iter(np.array_split(speech_minute, 37)))  # any block sizes
    assert t.transcribe_any([short, speech_minute]) == [t.transcribe(short), text]
    # each window's own transcript appears in the join around its middle (windows at 0, 16, 32, 48 s)
    middle = t.transcribe(speech_minute[16 * SR:36 * SR])
    assert len(middle) > 30 and middle[len(middle) // 3:2 * len(middle) // 3] in text


def _logged_models(root: Path, speech: np.ndarray) -> tuple[str, str, str]:
    """(tracking URI, ASR model URI, trigger-word model URI): the tiny CTC transcriber and an
    untrained detector whose threshold is the 90th percentile of its scores on ``speech``, logged
    as seqflow pyfuncs in a fresh SQLite store under ``root``."""
    tdir = _ctc_transcriber(root)
    torch.manual_seed(0)
    kws_cfg = {"features": {"n_mels": 40},
               "net": {"conv_channels": 8, "gru_hidden": 8, "gru_layers": 1, "dropout": 0.0}}
    net = TriggerWordNet(40, **kws_cfg["net"])
    ddir = save_detector(root / "detector", net, kws_cfg, threshold=0.5, refractory_s=1.0)
    probs, _ = load_detector(ddir).scores(speech)
    save_detector(ddir, net, kws_cfg, threshold=float(np.quantile(probs, 0.9)), refractory_s=1.0)
    with mlflow_store(root, "seqflow/long-audio") as uri, mlflow.start_run():
        asr = log_asr_model(tdir, speech[:SR], name="asr").model_uri
        kws = log_trigger_word_model(ddir, speech[:SR], name="kws").model_uri
    return uri, asr, kws


def test_cli_progress_bar_goes_to_stderr_and_leaves_stdout_unchanged(tmp_path: Path, speech_minute: np.ndarray
                                                                     ) -> None:
    """``--progress`` (forced: stderr is a pipe here) draws a bar over the file's seconds on stderr;
    stdout is byte-identical to a ``--no-progress`` run's (it may be piped or parsed)."""
    from typer.testing import CliRunner

    from seqflow.cli import app

    path = tmp_path / "talk.flac"
    sf.write(path, speech_minute[:45 * SR], SR, subtype="PCM_16")
    uri, asr, kws = _logged_models(tmp_path, speech_minute)
    exe = str(Path(sys.executable).with_name("seqflow"))
    cmds = {c: [exe, c, str(path), "--model", m, "--tracking-uri", uri]
            for c, m in (("transcribe", asr), ("detect", kws))}
    procs = {c: subprocess.Popen(cmd + ["--progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c, cmd in cmds.items()}  # side by side
    runner = CliRunner()
    try:
        for command, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-2000:]
            assert f"{command} talk.flac: 100%|" in err and "45/45 s of audio" in err, err[-2000:]
            quiet = runner.invoke(app, cmds[command][1:] + ["--no-progress"])  # in-process: no model load cost
            assert quiet.exit_code == 0 and "%|" not in quiet.stderr, quiet.output[-2000:]
            assert out == quiet.stdout and str(path) in out
    finally:
        mlflow.set_tracking_uri(None)  # the CLI set it in this process


def _peak_rss_mb(cmds: list[list[str]], tmp: Path) -> list[tuple[float, str]]:
    """Run ``cmds`` side by side; each one's own peak RSS [MB] (its ``os.wait4`` rusage) and output."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = []
    for i, cmd in enumerate(cmds):
        out = open(tmp / f"out-{i}.txt", "wb")
        procs.append((subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env), out))
    results = []
    for i, (proc, out) in enumerate(procs):
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.close()
        text = (tmp / f"out-{i}.txt").read_text()
        assert proc.returncode == 0, text[-2000:]
        results.append((usage.ru_maxrss / 1024, text))
    return results


@pytest.mark.slow
def test_cli_peak_memory_is_flat_from_10_to_20_minutes(tmp_path: Path, speech_minute: np.ndarray) -> None:
    rng = np.random.default_rng(2)
    files = {}
    for minutes in (10, 20):
        files[minutes] = tmp_path / f"talk-{minutes}min.flac"
        with sf.SoundFile(files[minutes], "w", SR, 1, subtype="PCM_16") as f:
            for _ in range(minutes):
                f.write(speech_minute + (0.003 * rng.standard_normal(len(speech_minute))).astype(np.float32))
    uri, asr, kws = _logged_models(tmp_path, speech_minute)
    exe = str(Path(sys.executable).with_name("seqflow"))
    peaks = {}
    for minutes in (10, 20):  # transcribe and detect side by side (2 cores), one length at a time
        (peaks["transcribe", minutes], text), (peaks["detect", minutes], dets) = _peak_rss_mb(
            [[exe, command, str(files[minutes]), "--model", model, "--tracking-uri", uri]
             for command, model in (("transcribe", asr), ("detect", kws))], tmp_path)
        line = [x for x in text.splitlines() if x.startswith(str(files[minutes]))][0]
        assert len(line.split("\t")[1]) > 300 * minutes  # a transcript of all of it (~10 characters a second)
        n = int(dets.split(f"{files[minutes]}: ")[1].split()[0])
        assert n >= minutes  # detections all the way through (threshold at the 90th percentile)
    print({f"{c}/{m}min": round(v) for (c, m), v in peaks.items()})
    # the old whole-file path grew ~60 MB per extra 10 min (38 MB of float32 samples plus a copy)
    for command in ("transcribe", "detect"):
        assert peaks[command, 20] <= peaks[command, 10] + 30, peaks
