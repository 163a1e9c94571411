"""Issue 9 failure modes that need no Ray: lost shard samples counted per batch, no collective in
a rank-0-only branch (static check of src/), 8 concurrent writers to one SQLite MLflow store,
concurrent registrations, CTC loss on audio too short for its transcript."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from _subprocesses import fork_all

from seqflow.shards.reader import make_dataloader
from seqflow.shards.writer import _encode, _finish_index, _Shards

SR = 16000
SRC = Path(__file__).resolve().parents[2] / "src" / "seqflow"


def test_lost_samples_are_counted_on_the_batch_after_each_pass_over_a_damaged_shard(tmp_path):
    folder = tmp_path / "train"
    folder.mkdir()
    shards = _Shards(folder)
    shards.open_next()
    for i in range(4):
        wav = (0.1 * np.random.default_rng(i).standard_normal(SR // 4)).astype(np.float32)
        enc, sec = _encode({"__key__": f"k{i}", "audio": wav, "sample_rate": SR, "txt": "",
                            "json": {"duration": 0.25, "segments": []}}, "flac")
        shards.write(enc, sec)
    shards.close()
    _finish_index(folder, shards.stats, "train", "flac", "md5", "hash")
    tar = folder / "shard-000000.tar"
    data = tar.read_bytes()
    start = data.index(b"fLaC", data.index(b"fLaC") + 4)  # 2nd sample's FLAC stream: undecodable
    tar.write_bytes(data[:start] + b"XXXX" + data[start + 4:])
    dl = make_dataloader(folder / "index.json", 1, 0, 1, 0, shuffle=False, seed=0, epoch_batches=7)
    batches = list(dl)
    assert [b["keys"][0] for b in batches] == ["k0", "k2", "k3"] * 2 + ["k0"]
    # each pass loses 1 sample, known at the end of the tar: on the first batch of the next pass
    assert [b.get("lost_samples", 0) for b in batches] == [0, 0, 0, 1, 0, 0, 1]


COLLECTIVES = {"all_gather", "all_reduce", "barrier", "broadcast", "reduce", "gather", "scatter", "all_to_all",
               "reduce_boolean_decision", "save_checkpoint", "all_gather_object", "broadcast_object_list"}


def _rank0_only(test: ast.expr) -> bool:
    text = ast.unparse(test).replace(" ", "")
    return "is_global_zero" in text or any(f"{r}==0" in text for r in ("rank", "global_rank", "get_world_rank()",
                                                                       "get_rank()", "local_rank"))


def collectives_in_rank0_branches(source: str, name: str) -> list[str]:
    """``file:line call`` for every collective (or ``self.log(..., sync_dist=True)``) inside the
    body of an ``if`` whose test singles out rank 0 (ray#56997: such a call hangs every other rank)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.If) and _rank0_only(node.test)):
            continue
        for stmt in node.body:
            for call in (c for c in ast.walk(stmt) if isinstance(c, ast.Call)):
                attr = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                sync = any(k.arg == "sync_dist" and ast.unparse(k.value) != "False" for k in call.keywords)
                if attr in COLLECTIVES or (attr == "log" and sync):
                    found.append(f"{name}:{call.lineno} {ast.unparse(call.func)}")
    return found


def test_no_collective_inside_a_rank0_only_branch():
    bad = "if trainer.global_rank == 0:\n    x = trainer.strategy.all_gather(t)\n    trainer.save_checkpoint(p)\n"
    assert collectives_in_rank0_branches(bad, "bad.py") == ["bad.py:2 trainer.strategy.all_gather",
                                                            "bad.py:3 trainer.save_checkpoint"]
    good = "x = trainer.strategy.all_gather(t)\nif trainer.is_global_zero:\n    log(x)\n"
    assert collectives_in_rank0_branches(good, "good.py") == []
    files = sorted(SRC.rglob("*.py"))
    assert len(files) > 50 and (SRC / "train" / "worker.py") in files
    found = [f for p in files for f in collectives_in_rank0_branches(p.read_text(), str(p.relative_to(SRC)))]
    assert found == []


def _setup_store(uri: str, art: str, q) -> None:
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.MlflowClient().create_experiment("concurrent", artifact_location=art)
    q.put((exp, mlflow.MlflowClient().create_run(exp).info.run_id))


def _writer(uri: str, exp: str, shared_run: str, w: int, n: int, q) -> None:
    from mlflow import MlflowClient

    try:
        client = MlflowClient(tracking_uri=uri)
        own = client.create_run(exp, run_name=f"writer-{w}").info.run_id
        for i in range(n):
            client.log_metric(own, "m", float(i), step=i)
            client.log_metric(shared_run, f"w{w}", float(i), step=i)
        client.set_terminated(own)
        q.put((w, own, None))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the test with it
        q.put((w, None, f"{type(e).__name__}: {e}"))


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory):
    """``(uri, experiment id, a shared run id)`` of one fresh SQLite MLflow store, created in a
    forked process (creating the tables takes ~10 s: once for this module's tests)."""
    tmp = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{tmp}/mlflow.db"
    [(exp, shared)] = fork_all(_setup_store, [(uri, str(tmp / "art"))])
    return uri, exp, shared


@pytest.mark.slow
def test_eight_concurrent_writers_to_one_sqlite_store_lose_no_metric(sqlite_store):
    (uri, exp, shared), n = sqlite_store, 25
    results = fork_all(_writer, [(uri, exp, shared, w, n) for w in range(8)])
    assert [e for _, _, e in results if e] == []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for _, own, _ in results:
        assert [m.value for m in client.get_metric_history(own, "m")] == [float(i) for i in range(n)]
    for w in range(8):
        assert sorted(m.step for m in client.get_metric_history(shared, f"w{w}")) == list(range(n))


def _register(uri: str, exp: str, model_dir: str, w: int, q) -> None:
    from mlflow import MlflowClient

    from seqflow.tracking.registry import register_and_promote

    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        run = client.create_run(exp, run_name=f"reg-{w}").info.run_id
        client.log_metric(run, "test/frr", 0.5 - 0.05 * w)
        client.set_terminated(run)
        d = register_and_promote(model_dir, "seqflow-concurrent", run, "test/frr", client=client, timeout_s=60)
        q.put((w, run, int(d.version), None))
    except Exception as e:  # noqa: BLE001 - reported to the parent
        q.put((w, None, None, f"{type(e).__name__}: {e}"))


@pytest.mark.slow
def test_concurrent_registrations_never_leave_a_half_version(sqlite_store, tmp_path):
    uri, exp, _ = sqlite_store
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "MLmodel").write_text("flavors: {}\n")
    results = fork_all(_register, [(uri, exp, str(model_dir), w) for w in range(6)])
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    versions = client.search_model_versions("name='seqflow-concurrent'")
    errors = [e for *_, e in results if e]
    assert errors == []
    assert sorted(int(v.version) for v in versions) == list(range(1, 7))
    assert sorted(v for _, _, v, _ in results) == list(range(1, 7))
    for v in versions:  # every version complete: READY, tagged ready, its run's decision recorded
        assert v.status == "READY" and v.tags.get("seqflow.status") == "ready", (v.version, v.tags)
        assert client.get_run(v.run_id).data.tags["promotion.version"] == str(v.version)
    aliases = client.get_registered_model("seqflow-concurrent").aliases
    assert set(aliases) >= {"champion", "challenger"}
    assert all(client.get_model_version("seqflow-concurrent", v).tags["seqflow.status"] == "ready"
               for v in aliases.values())


@pytest.mark.parametrize("samples", [160, 800, 1600])  # 10 ms (T'=0 frames after subsampling), 50 ms, 0.1 s
def test_ctc_loss_is_finite_with_finite_gradients_on_audio_too_short_for_its_transcript(samples):
    from seqflow.audio.frontend import SpeechFrontend
    from seqflow.models.ctc import CTCModel, ctc_feasible, ctc_loss

    torch.manual_seed(0)
    frontend, net = SpeechFrontend(n_mels=40), CTCModel(40, 12, d_model=16, num_heads=2, num_layers=1, d_ff=32)
    wav = 0.1 * torch.randn(2, 16000)
    wav[0, samples:] = 0.0
    lengths = torch.tensor([samples, 16000])  # one far too short for 8 tokens, one fine, in one batch
    targets = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [3, 4, 5, 0, 0, 0, 0, 0]])
    assert not ctc_feasible(samples, targets[0].tolist(), 160) and ctc_feasible(16000, [3, 4, 5], 160)
    log_probs, out_lengths = net(*frontend(wav, lengths))
    loss = ctc_loss(log_probs, out_lengths, targets, torch.tensor([8, 3]))
    assert torch.isfinite(loss) and loss > 0  # the feasible utterance still counts
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
