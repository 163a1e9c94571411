"""The stage cache follows the code (issue 9): on a real Prefect ephemeral API, a cached stage is
reused while nothing changed and runs again after one byte of fingerprinted source changes — in a
model family module declared outside seqflow, in (a temporary copy of) seqflow's own package, and
in the version of a library seqflow declares."""

from __future__ import annotations

import shutil
import textwrap
import time
from pathlib import Path

from _subprocesses import run_flow_script

from seqflow import stage_cache

SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from prefect import flow, task
    from seqflow import stage_cache

    tmp = Path(sys.argv[1]); uri = f"sqlite:///{tmp}/mlflow.db"
    sys.path.insert(0, str(tmp / "src"))
    ran = []

    @task(name="shard", **stage_cache.CACHED)
    def shard(cfg: dict, md5: str) -> dict:
        ran.append("shard"); root = tmp / f"shards-{md5}"; root.mkdir(exist_ok=True)
        return {"root": str(root)}

    @flow
    def pipe(cfg: dict) -> list:
        ran.clear()
        stage_cache.run_stage(shard, uri, cfg, "m1")
        return list(ran)

    def edited(path):  # one byte of source changes, as a user editing the code between two runs
        path.write_bytes(path.read_bytes() + b"\\n# edited\\n")
        stage_cache.code_version.cache_clear()

    stage_cache.PACKAGE_ROOT = tmp / "seqflow_copy"   # a copy of seqflow's package, edited below
    cfg = {"model": {"family": "my_models.tiny_kws"}, "a": 1}
    out = {"first": pipe(cfg), "same": pipe(cfg)}
    edited(tmp / "src" / "my_models" / "helpers.py")   # a helper beside the family module
    out["family_edited"] = pipe(cfg)
    out["family_edited_again_same"] = pipe(cfg)
    edited(tmp / "seqflow_copy" / "shards" / "clips.py")
    out["package_edited"] = pipe(cfg)
    (tmp / "seqflow_copy" / "NOTES.md").write_text("docs only"); stage_cache.code_version.cache_clear()
    out["docs_added"] = pipe(cfg)
    installed = stage_cache.library_versions()      # an upgraded library, as after `pip install -U`
    stage_cache.library_versions = lambda: tuple(sorted({*installed, "lightning==99.0.0"} - {
        v for v in installed if v.startswith("lightning==")}))
    stage_cache.code_version.cache_clear()
    out["library_upgraded"] = pipe(cfg)
    out["library_upgraded_same"] = pipe(cfg)
    print(json.dumps(out))
""")


def _family(root: Path) -> None:
    pkg = root / "src" / "my_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helpers.py").write_text("DROPOUT = 0.5\n")
    (pkg / "tiny_kws.py").write_text("from my_models.helpers import DROPOUT\n")


def test_a_source_byte_change_reruns_the_stage(tmp_path: Path) -> None:
    _family(tmp_path)
    shutil.copytree(stage_cache.PACKAGE_ROOT, tmp_path / "seqflow_copy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = run_flow_script(SCRIPT, tmp_path)
    assert out == {"first": ["shard"], "same": [], "family_edited": ["shard"], "family_edited_again_same": [],
                   "package_edited": ["shard"], "docs_added": [], "library_upgraded": ["shard"],
                   "library_upgraded_same": []}, out


def test_fingerprint_is_fast_and_ignores_caches(tmp_path: Path) -> None:
    """Measured: the fingerprint of seqflow's ~140 source files takes well under a second; a
    ``__pycache__`` folder or a ``.md`` file does not change it."""
    copy = tmp_path / "seqflow"
    shutil.copytree(stage_cache.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    t0 = time.perf_counter()
    before = stage_cache.tree_fingerprint(copy)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0compiled")
    (copy / "README.md").write_text("docs")
    assert stage_cache.tree_fingerprint(copy) == before == stage_cache.tree_fingerprint(stage_cache.PACKAGE_ROOT)
    assert stage_cache.family_source("seqflow.families.ctc") is None   # inside the package fingerprint


def test_library_versions_are_the_installed_versions_of_the_declared_dependencies() -> None:
    import sys

    import lightning
    import torch

    versions = stage_cache.library_versions()
    assert f"torch=={torch.__version__}" in versions and f"lightning=={lightning.__version__}" in versions
    assert f"python=={sys.version_info.major}.{sys.version_info.minor}" in versions
    assert not any(v.startswith(("pytest==", "jsonschema==")) for v in versions)  # the test extra is left out
    assert list(versions) == sorted(versions)
