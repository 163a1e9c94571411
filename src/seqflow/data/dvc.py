"""Version the corpus with DVC (Python API): ``dvc add data`` -> ``data.dvc``, ``dvc push`` to a remote.

The data version is the directory md5 DVC writes into the top-level ``data.dvc``; it is tagged on every
MLflow run (``data.dvc_md5``) next to :func:`git_commit` (``git.commit``) and names the shard folder.

>>> v = version_data(Path("."), data_dir="data", remote_name="local", remote_url="dvc-remote")  # doctest: +SKIP
>>> v.md5, v.short, v.dvc_file.name, v.pushed  # doctest: +SKIP
('3f2a...e1', '3f2a9c1b', 'data.dvc', True)

DVC needs git: the project root must be inside a git work tree. ``dvc init`` (with ``core.analytics false``)
runs when ``<project_root>/.dvc`` is missing; DVC stages its own ``.dvc/config``, ``.dvc/.gitignore`` and
``.dvcignore`` at init and adds ``/data`` to ``.gitignore`` when it is not ignored yet; a folder remote created
inside the work tree is added to ``.gitignore`` too. Nothing is committed:
``data.dvc``, ``.gitignore`` and ``.dvc/config`` are left for the user to commit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from seqflow.errors import SeqflowError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataVersion:
    """A versioned corpus.

    Attributes:
        md5: directory hash, 32 hex digits (``data.dvc``'s ``md5`` without DVC's ``.dir`` suffix).
        dvc_md5: the value as written in ``data.dvc``, e.g. ``"<md5>.dir"``.
        dvc_file: path of ``data.dvc``.
        pushed: the cache was pushed to ``remote`` (``False`` when ``push=False``).
        pushed_files: files uploaded by this call (0 when the remote already had them).
        remote: name of the DVC remote pushed to (``None`` without push).
        nfiles / size: files and bytes in the directory, as recorded by DVC.
    """

    md5: str
    dvc_md5: str
    dvc_file: Path
    pushed: bool
    pushed_files: int = 0
    remote: str | None = None
    nfiles: int | None = None
    size: int | None = None

    @property
    def short(self) -> str:
        """First 8 hex digits of :attr:`md5`."""
        return self.md5[:8]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise SeqflowError("git is not installed; DVC data versioning needs git") from exc


def git_toplevel(project_root: Path) -> Path:
    """Top of the git work tree containing ``project_root``.

    Raises:
        SeqflowError: ``project_root`` is not inside a git work tree (or git is missing).
    """
    res = _git(Path(project_root), "rev-parse", "--show-toplevel")
    if res.returncode != 0:
        raise SeqflowError(
            f"{project_root}: not a git repository; DVC data versioning needs git "
            f"(run `git init` there first): {res.stderr.strip()}")
    return Path(res.stdout.strip()).resolve()


def git_commit(project_root: Path) -> str:
    """``HEAD`` commit of the repository holding ``project_root``, ``+"-dirty"`` when tracked files changed.

    Untracked files do not count as dirty (as ``git describe --dirty``). Returns ``"unknown"`` when there is
    no git, no repository, or no commit yet.
    """
    try:
        head = _git(Path(project_root), "rev-parse", "HEAD")
    except SeqflowError:
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    status = _git(Path(project_root), "status", "--porcelain", "--untracked-files=no")
    dirty = status.returncode == 0 and bool(status.stdout.strip())
    return head.stdout.strip() + ("-dirty" if dirty else "")


def _read_dvc_file(dvc_file: Path) -> dict | None:
    if not dvc_file.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("outs") or []
    except yaml.YAMLError as exc:
        raise SeqflowError(f"{dvc_file}: not a valid .dvc file: {exc}") from exc
    return outs[0] if outs and outs[0].get("md5") else None


def read_data_md5(project_root: Path, data_dir: str = "data") -> str | None:
    """The data version in ``<project_root>/<data_dir>.dvc`` (32 hex digits, no ``.dir``), or ``None``."""
    data = Path(data_dir) if Path(data_dir).is_absolute() else Path(project_root) / data_dir
    out = _read_dvc_file(data.parent / f"{data.name}.dvc")
    return str(out["md5"]).removesuffix(".dir") if out else None


@contextlib.contextmanager
def _quiet_dvc():
    """Silence DVC's INFO chatter ("To track the changes with git ...") on stdout; warnings still show."""
    loggers = [logging.getLogger(n) for n in ("dvc", "dvc_data", "dvc_objects")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ensure_repo(root: Path) -> None:
    """``dvc init`` when ``root/.dvc`` is missing; analytics off either way."""
    from dvc.repo import Repo

    if not (root / ".dvc").is_dir():
        subdir = git_toplevel(root) != root.resolve()
        Repo.init(root_dir=str(root), subdir=subdir).close()
        log.info("dvc init in %s%s", root, " (subdir of the git repository)" if subdir else "")
    with Repo(str(root)) as repo:
        if repo.config["core"].get("analytics", True) is not False:
            with repo.config.edit() as conf:
                conf["core"]["analytics"] = False


def _remote_url(root: Path, url: str | os.PathLike) -> str:
    """A URL (``s3://...``) as given; a local folder absolute, or relative to ``.dvc/`` when inside the project
    (DVC resolves relative remote paths against the config file, so the committed config stays portable)."""
    from dvc.config_schema import RelPath  # DVC stores a RelPath relative to the config file's folder

    if "://" in str(url):
        return str(url)
    target = (Path(url) if Path(url).is_absolute() else root / url).resolve()
    return RelPath(target) if target.is_relative_to(root.resolve()) else str(target)


def _ensure_remote(root: Path, name: str, url: str | os.PathLike) -> str:
    """Name of the remote to push to: the configured default, else ``name`` (added as a local folder if new)."""
    from dvc.config_schema import RelPath
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        default = repo.config["core"].get("remote")
        if default:
            return default
        with repo.config.edit() as conf:
            if name not in repo.config["remote"]:
                conf["remote"][name] = {"url": _remote_url(root, url)}
                log.info("dvc remote %r -> %s", name, url)
                if isinstance(conf["remote"][name]["url"], RelPath):  # a folder remote inside the work tree:
                    repo.scm.ignore(str(conf["remote"][name]["url"]))  # keep it out of git (.gitignore entry)
            conf["core"]["remote"] = name
        return name


def version_data(project_root: Path, data_dir: str = "data", remote_name: str = "local",
                 remote_url: str | os.PathLike | None = None, push: bool = True) -> DataVersion:
    """``dvc add <data_dir>`` and ``dvc push``; idempotent (unchanged data: same md5, nothing uploaded).

    Args:
        project_root: folder holding ``.dvc/`` (created if missing) and ``<data_dir>.dvc``; inside a git work tree.
        data_dir: the corpus folder, relative to ``project_root`` (or absolute inside it).
        remote_name / remote_url: remote added as the default when none is configured (a local folder path,
            relative to ``project_root``, or any DVC URL such as ``s3://bucket/path``); default
            ``<project_root>/dvc-remote``. An existing default remote is used as configured.
        push: upload the cache to the remote.

    Returns:
        :class:`DataVersion` read back from ``<data_dir>.dvc``.

    Raises:
        SeqflowError: not a git repository, ``data_dir`` missing or outside ``project_root``, or a DVC
            failure (message names the step, e.g. "dvc push to remote 'local'", and DVC's reason).
    """
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root = Path(project_root).absolute()
    git_toplevel(root)
    data = Path(data_dir) if Path(data_dir).is_absolute() else root / data_dir
    try:
        rel = data.resolve().relative_to(root.resolve())
    except ValueError:
        raise SeqflowError(f"{data}: data folder is outside the project root {root}") from None
    if not data.is_dir():
        raise SeqflowError(f"{data}: no data folder to version (run prepare first)")
    remote_url = remote_url if remote_url is not None else root / "dvc-remote"

    step = "dvc init"
    try:
        with _quiet_dvc():
            _ensure_repo(root)
            remote = None
            if push:
                step = "dvc remote add"
                remote = _ensure_remote(root, remote_name, remote_url)
            with Repo(str(root)) as repo:
                step = f"dvc add {rel}"
                stages = repo.add(str(data))  # absolute: DVC resolves relative paths against the cwd
                dvc_file = Path(stages[0].path)
                pushed_files = 0
                if push:
                    step = f"dvc push to remote {remote!r}"
                    pushed_files = int(repo.push(targets=[str(dvc_file)], remote=remote) or 0)
    except DvcException as exc:
        raise SeqflowError(f"{root}: {step} failed: {exc}") from exc

    out = _read_dvc_file(dvc_file)
    if out is None:
        raise SeqflowError(f"{dvc_file}: DVC wrote no md5 for {rel}")
    version = DataVersion(
        md5=str(out["md5"]).removesuffix(".dir"), dvc_md5=str(out["md5"]), dvc_file=dvc_file, pushed=push,
        pushed_files=pushed_files, remote=remote, nfiles=out.get("nfiles"), size=out.get("size"))
    log.info("data version %s (%s files, %s bytes) in %s; pushed %d file(s) to %s",
             version.md5, version.nfiles, version.size, dvc_file.name, pushed_files, remote or "no remote")
    return version
