"""Fetching and unpacking Debian packages, with a fake apt-get and a locally built tiny .deb."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from seqflow.evalsets.debian import STAMP, EvalDataUnavailable, extract, fetch_packages

FAKE_APT = """#!/bin/sh
# fake apt-get: "update" is logged; "download A B" writes A_1.0_all.deb unless the package list is stale
echo "$@" >> "{log}"
if [ "$1" = update ]; then touch "{updated}"; exit 0; fi
shift
for p in "$@"; do
  case "$p" in nope*) echo "E: Unable to locate package $p"; exit 100;; esac
  if [ "$p" = fresh ] && [ ! -e "{updated}" ]; then echo "E: Unable to locate package fresh"; exit 100; fi
  printf 'deb %s' "$p" > "${{p}}_1.0_all.deb"
done
"""


@pytest.fixture
def fake_apt(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    script = bin_dir / "apt-get"
    script.write_text(FAKE_APT.format(log=log, updated=tmp_path / "updated"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return log


def test_existing_debs_are_reused_without_apt(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    (tmp_path / "debs").mkdir()
    deb = tmp_path / "debs" / "festival_1%3a2.5.0-9_amd64.deb"
    deb.write_bytes(b"x")
    assert fetch_packages(["festival"], tmp_path / "debs") == {"festival": deb}
    with pytest.raises(EvalDataUnavailable, match=r"^apt-get not found"):
        fetch_packages(["festvox-kallpc16k"], tmp_path / "debs")


def test_downloads_missing_debs_once(fake_apt, tmp_path):
    debs = fetch_packages(["a", "b"], tmp_path / "debs")
    assert {k: v.name for k, v in debs.items()} == {"a": "a_1.0_all.deb", "b": "b_1.0_all.deb"}
    fetch_packages(["a", "b"], tmp_path / "debs")
    assert fake_apt.read_text().splitlines() == ["download a b"]
    assert not list((tmp_path / "debs").glob(".download-*"))  # the temporary folder is gone


def test_unknown_package_triggers_one_update_then_retries(fake_apt, tmp_path):
    assert fetch_packages(["fresh"], tmp_path / "debs")["fresh"].name == "fresh_1.0_all.deb"
    assert fake_apt.read_text().splitlines() == ["download fresh", "update", "download fresh"]


def test_failed_download_is_one_clear_line(fake_apt, tmp_path):
    with pytest.raises(EvalDataUnavailable) as e:
        fetch_packages(["nope-pkg"], tmp_path / "debs")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("apt-get download nope-pkg failed") and "Unable to locate" in msg
    assert fake_apt.read_text().splitlines().count("update") == 1


def _tiny_deb(tmp_path: Path, name: str, files: dict[str, str]) -> Path:
    src = tmp_path / f"src-{name}"
    (src / "DEBIAN").mkdir(parents=True)
    (src / "DEBIAN/control").write_text(f"Package: {name}\nVersion: 1.0\nArchitecture: all\n"
                                        "Maintainer: t <t@t>\nDescription: test\n")
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    deb = tmp_path / f"{name}_1.0_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(src), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None, reason="dpkg/dpkg-deb not on PATH: this test builds and unpacks a real .deb with Debian's own tools (present on the Debian CI and dev machines)")
def test_extract_unpacks_atomically_and_reuses(tmp_path):
    a = _tiny_deb(tmp_path, "a", {"usr/share/a/x.txt": "A"})
    b = _tiny_deb(tmp_path, "b", {"usr/share/b/y.txt": "B"})
    dest = extract(a, tmp_path / "pkgs" / "a")
    assert (dest / "usr/share/a/x.txt").read_text() == "A" and (dest / STAMP).read_text() == a.name + "\n"
    mtime = (dest / "usr/share/a/x.txt").stat().st_mtime_ns
    assert extract(a, dest) == dest and (dest / "usr/share/a/x.txt").stat().st_mtime_ns == mtime
    merged = extract([a, b], tmp_path / "pkgs" / "a")  # other debs: replaced, both trees merged
    assert (merged / "usr/share/b/y.txt").read_text() == "B" and (merged / "usr/share/a/x.txt").is_file()
    assert sorted(p.name for p in (tmp_path / "pkgs").iterdir()) == ["a"]  # no temporary folders left
    bad = tmp_path / "bad_1.0_all.deb"
    bad.write_bytes(b"not a deb")
    with pytest.raises(EvalDataUnavailable, match=r"^dpkg -x bad_1.0_all.deb failed"):
        extract(bad, tmp_path / "pkgs" / "bad")
    assert not (tmp_path / "pkgs" / "bad").exists()
