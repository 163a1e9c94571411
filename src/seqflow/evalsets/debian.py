"""Fetch and unpack Debian packages without installing anything system-wide.

``apt-get download NAME`` puts ``NAME_VERSION_ARCH.deb`` in a folder of ours; ``dpkg -x`` unpacks
it into a private tree. Nothing is configured, no maintainer script runs, nothing under ``/usr``
changes. The evaluation sets (:mod:`seqflow.evalsets.builders`) and the held-out TTS engine
(:mod:`seqflow.evalsets.festival`) read the unpacked trees.

Errors: a missing ``apt-get`` / ``dpkg``, or a download that fails (no network, unknown package),
raises :class:`EvalDataUnavailable` with a one-line message; callers that build optional
evaluation data print it and move on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from seqflow.errors import SeqflowError

log = logging.getLogger("seqflow.evalsets")
STAMP = ".seqflow-debs"  # inside an unpacked tree: the .deb file names it was made from, one a line


class EvalDataUnavailable(SeqflowError):
    """Evaluation data (Debian packages, festival) cannot be obtained on this machine.

    The message is one line saying why (tool missing, download failed, library missing).
    """


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise EvalDataUnavailable(f"{name} not found (evaluation data comes from Debian packages)")
    return path


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith(("E:", "Err:"))]
    return (errs or lines or ["no output"])[0][:300]


def find_deb(name: str, debs_dir: Path) -> Path | None:
    """The ``<name>_*.deb`` already in ``debs_dir`` (the last by name if several), else ``None``."""
    found = sorted(Path(debs_dir).glob(f"{name}_*.deb"))
    return found[-1] if found else None


def is_installed(name: str) -> bool:
    """Whether dpkg reports package ``name`` as installed on this machine (False without dpkg)."""
    if shutil.which("dpkg-query") is None:
        return False
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", name], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip().endswith("install ok installed")


def _download(apt: str, names: Sequence[str], debs_dir: Path) -> tuple[int, str]:
    """``apt-get download`` into a temporary folder inside ``debs_dir``, then move each .deb in
    (so a half-written file never carries a final name)."""
    tmp = Path(tempfile.mkdtemp(dir=debs_dir, prefix=".download-"))
    try:
        r = subprocess.run([apt, "download", *names], cwd=tmp, capture_output=True, text=True)
        for deb in tmp.glob("*.deb"):
            os.replace(deb, debs_dir / deb.name)
        return r.returncode, r.stdout + r.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_packages(names: Sequence[str], debs_dir: Path) -> dict[str, Path]:
    """Make sure ``<name>_*.deb`` exists in ``debs_dir`` for every name; download what is missing.

    One ``apt-get download`` call fetches all missing packages; if it fails with "Unable to
    locate" (stale or absent package lists) ``apt-get update`` runs once and the download is
    retried. Debs already present are reused without touching the network.

    Args:
        names: Debian package names (``festival``, ``ktuberling-data``, ...).
        debs_dir: folder for the .deb files (created).

    Returns:
        ``{name: path of its .deb}`` for every name, in input order.

    Raises:
        EvalDataUnavailable: ``apt-get`` missing, or a download failed (message: apt's first error).
    """
    debs_dir = Path(debs_dir)
    debs_dir.mkdir(parents=True, exist_ok=True)
    missing = [n for n in dict.fromkeys(names) if find_deb(n, debs_dir) is None]
    if missing:
        apt = _tool("apt-get")
        log.info("apt-get download %s", " ".join(missing))
        rc, out = _download(apt, missing, debs_dir)
        if rc != 0 and "Unable to locate" in out:
            log.info("apt-get update (package lists do not know %s)", " ".join(missing))
            up = subprocess.run([apt, "update"], capture_output=True, text=True)
            if up.returncode != 0:
                raise EvalDataUnavailable(f"apt-get update failed: {_first_error(up.stdout + up.stderr)}")
            missing = [n for n in missing if find_deb(n, debs_dir) is None]
            rc, out = _download(apt, missing, debs_dir)
        still = [n for n in missing if find_deb(n, debs_dir) is None]
        if rc != 0 or still:
            raise EvalDataUnavailable(f"apt-get download {' '.join(still or missing)} failed: {_first_error(out)}")
    return {n: find_deb(n, debs_dir) for n in names}  # type: ignore[misc]


def extract(deb: Path | Sequence[Path], dest: Path) -> Path:
    """Unpack one .deb (or several, into one tree) with ``dpkg -x``.

    The tree is built in a temporary sibling folder and renamed to ``dest`` at the end, so
    ``dest`` is either absent or complete. A ``dest`` made from the same .deb file names (recorded
    in ``dest/.seqflow-debs``) is reused as it is; one made from other debs is replaced.

    Args:
        deb: a .deb path, or several whose contents are merged (later ones win on clashes).
        dest: the folder to create, e.g. ``eval-data/pkgs/<name>``.

    Returns:
        ``dest``.

    Raises:
        EvalDataUnavailable: ``dpkg`` missing, or ``dpkg -x`` failed on a file.
    """
    debs = [Path(deb)] if isinstance(deb, (str, os.PathLike)) else [Path(d) for d in deb]
    dest = Path(dest)
    stamp = "".join(d.name + "\n" for d in debs)
    if dest.is_dir() and (dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp:
        return dest
    dpkg = _tool("dpkg")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        for d in debs:
            r = subprocess.run([dpkg, "-x", str(d), str(tmp)], capture_output=True, text=True)
            if r.returncode != 0:
                raise EvalDataUnavailable(f"dpkg -x {d.name} failed: {_first_error(r.stdout + r.stderr)}")
        (tmp / STAMP).write_text(stamp)
        if dest.exists():  # made from other debs (or unstamped): swap it out
            old = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old."))
            os.replace(dest, old / "tree")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def fetch_and_extract(names: Sequence[str], debs_dir: Path, pkgs_dir: Path) -> dict[str, Path]:
    """:func:`fetch_packages` then :func:`extract` each into ``pkgs_dir/<name>``; ``{name: tree}``.

    Raises:
        EvalDataUnavailable: as the two functions do.
    """
    debs = fetch_packages(names, debs_dir)
    return {n: extract(d, Path(pkgs_dir) / n) for n, d in debs.items()}
