"""version stage: real git + DVC in tmp_path (dvc init, add, push to a local folder remote)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from seqflow.audio.io import write_audio_atomic
from seqflow.data.dvc import git_commit, read_data_md5, version_data
from seqflow.data.manifest import Utterance, write_manifest
from seqflow.errors import SeqflowError


def _git(root, *args):
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path, monkeypatch):
    # never let git find a repository above tmp_path
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    data = root / "data"
    rng = np.random.default_rng(0)
    utts = []
    for i in range(12):
        rel = f"audio/train/positive/{i:03d}.flac"
        write_audio_atomic(data / rel, (0.1 * rng.standard_normal(1600)).astype(np.float32), 16000)
        utts.append(Utterance(rel, 0.1, "activate", "en-us+f3", "train", "positive"))
    write_manifest(data / "manifest.jsonl", utts)
    _git(root, "init", "-q")
    _git(root, "config", "user.email", "test@example.com")
    _git(root, "config", "user.name", "seqflow test")
    (root / "README.md").write_text("test project\n")
    _git(root, "add", "README.md")
    _git(root, "commit", "-q", "-m", "init")
    return root


def _remote_files(remote):
    return sorted(p for p in remote.rglob("*") if p.is_file())


def test_version_data_adds_pushes_and_is_idempotent(project, tmp_path, capsys):
    remote = tmp_path / "remote"
    v = version_data(project, remote_url=remote)

    assert re.fullmatch(r"[0-9a-f]{32}", v.md5) and v.dvc_md5 == v.md5 + ".dir" and v.short == v.md5[:8]
    assert v.dvc_file == project / "data.dvc" and v.dvc_file.is_file()
    assert read_data_md5(project) == v.md5
    assert v.nfiles == 13 and v.pushed and v.remote == "local"
    assert v.pushed_files == 14 and len(_remote_files(remote)) == 14  # 13 files + the directory listing
    assert "/data" in (project / ".gitignore").read_text().splitlines()
    config = (project / ".dvc" / "config").read_text()
    assert "analytics = False" in config and "remote = local" in config
    assert "To track the changes" not in capsys.readouterr().out  # DVC's INFO chatter is silenced

    again = version_data(project, remote_url=remote)
    assert again.md5 == v.md5 and again.pushed_files == 0
    assert len(_remote_files(remote)) == 14


def test_md5_changes_with_the_data_and_files_stay(project, tmp_path):
    remote = tmp_path / "remote"
    first = version_data(project, remote_url=remote)
    (project / "data" / "audio/train/positive/003.flac").write_bytes(b"not audio any more")  # later quarantined
    second = version_data(project, remote_url=remote)
    assert second.md5 != first.md5 and read_data_md5(project) == second.md5
    assert second.pushed_files == 2  # the changed file and the new directory listing
    assert (project / "data" / "audio/train/positive/003.flac").exists()


def test_default_remote_inside_project_is_relative_and_git_ignored(project):
    v = version_data(project)  # remote_url=None -> <project>/dvc-remote
    assert v.pushed and _remote_files(project / "dvc-remote")
    assert "url = ../dvc-remote" in (project / ".dvc" / "config").read_text()
    ignored = subprocess.run(["git", "-C", str(project), "check-ignore", "-q", "dvc-remote"])
    assert ignored.returncode == 0


def test_an_existing_default_remote_is_kept(project, tmp_path):
    version_data(project, remote_name="mine", remote_url=tmp_path / "mine")
    v = version_data(project, remote_name="local", remote_url=tmp_path / "other")
    assert v.remote == "mine" and not (tmp_path / "other").exists()


def test_without_push_nothing_is_uploaded(project, tmp_path):
    v = version_data(project, remote_url=tmp_path / "remote", push=False)
    assert not v.pushed and v.remote is None and not (tmp_path / "remote").exists()
    assert read_data_md5(project) == v.md5


def test_not_a_git_repository_is_a_clear_error(tmp_path):
    root = tmp_path / "plain"
    (root / "data").mkdir(parents=True)
    (root / "data" / "x.txt").write_text("x")
    with pytest.raises(SeqflowError, match="not a git repository"):
        version_data(root)
    assert not (root / ".dvc").exists()
    assert read_data_md5(root) is None
    assert git_commit(root) == "unknown"


def test_missing_or_outside_data_folder(project, tmp_path):
    with pytest.raises(SeqflowError, match="no data folder"):
        version_data(project, data_dir="nope")
    with pytest.raises(SeqflowError, match="outside the project root"):
        version_data(project, data_dir=str(tmp_path))


def test_git_commit_reports_dirty_tracked_files(project):
    clean = git_commit(project)
    assert re.fullmatch(r"[0-9a-f]{40}", clean)
    (project / "untracked.txt").write_text("u")
    assert git_commit(project) == clean  # untracked files do not make it dirty
    (project / "README.md").write_text("changed\n")
    assert git_commit(project) == clean + "-dirty"
