"""The parallel-suite helpers (tests/_schedule.py): each xdist worker's own Prefect home, Ray temp
dir and ONNX cache; longest work units first, short tests of a file kept in one unit; durations
read back from pytest's ``--durations=0`` lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from _schedule import _parse_durations, isolate_worker, schedule

TESTS = {
    "test_a.py": "def test_a1(): pass\ndef test_a2(): pass\n",
    "test_b.py": "def test_b1(): pass\ndef test_b_long(): pass\ndef test_b2(): pass\n",
    "test_c.py": "import pytest\n@pytest.mark.slow\ndef test_c_new(): pass\n",
}


def _scheduled(tmp_path: Path, monkeypatch, recorded: dict[str, float]) -> list[tuple[str, list[str]]]:
    """Collect a real tiny suite, schedule it as an xdist worker would; ``(nodeid, groups)``."""
    for name, text in TESTS.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    seen: list = []

    class Plugin:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, items):
            schedule(items, recorded)
            seen.extend((it.nodeid, [m.args[0] for m in it.iter_markers("xdist_group")]) for it in items)

    monkeypatch.chdir(tmp_path)
    assert pytest.main(["-q", "--collect-only", "-p", "no:cacheprovider", str(tmp_path)], plugins=[Plugin()]) == 0
    return seen


def test_longest_units_go_first_and_short_tests_of_a_file_stay_together(tmp_path: Path, monkeypatch) -> None:
    got = _scheduled(tmp_path, monkeypatch, {"test_b.py::test_b_long": 30.0, "test_a.py::test_a1": 4.0,
                                             "test_a.py::test_a2": 3.0})
    assert got == [
        ("test_b.py::test_b_long", []),                      # 30 s: a unit of its own
        ("test_a.py::test_a1", ["test_a.py"]), ("test_a.py::test_a2", ["test_a.py"]),  # 7 s
        ("test_c.py::test_c_new", ["test_c.py"]),            # unknown but slow: 5 s
        ("test_b.py::test_b1", ["test_b.py"]), ("test_b.py::test_b2", ["test_b.py"]),  # 2 x unknown 1 s
    ]


def test_each_worker_gets_its_own_prefect_home_ray_tmpdir_and_onnx_cache(tmp_path: Path) -> None:
    env = {"PREFECT_HOME": str(tmp_path / "p")}
    assert isolate_worker(env) is None and env == {"PREFECT_HOME": str(tmp_path / "p")}  # not under xdist
    env0 = {"PYTEST_XDIST_WORKER": "gw0", "PREFECT_HOME": str(tmp_path / "p")}
    env1 = {"PYTEST_XDIST_WORKER": "gw1", "PREFECT_HOME": str(tmp_path / "p"), "SEQFLOW_ONNX_CACHE": "/kept"}
    assert isolate_worker(env0) == "gw0" and isolate_worker(env1) == "gw1"
    assert env0["PREFECT_HOME"] == str(tmp_path / "p" / "xdist-gw0") and Path(env0["PREFECT_HOME"]).is_dir()
    assert env0["RAY_TMPDIR"] != env1["RAY_TMPDIR"] and Path(env1["RAY_TMPDIR"]).is_dir()
    assert len(env0["RAY_TMPDIR"]) < 40  # Ray's socket paths below it stay under 108 bytes
    assert env0["SEQFLOW_ONNX_CACHE"].endswith("onnx-xdist-gw0") and env1["SEQFLOW_ONNX_CACHE"] == "/kept"


def test_durations_are_summed_per_test_without_the_xdist_group_suffix() -> None:
    log = ("12.50s call     tests/x.py::test_a[ctc]\n2.00s setup    tests/x.py::test_a[ctc]\n"
           "0.30s call     tests/y.py::test_b@tests/y.py\n(3 durations < 0.005s hidden.)\n")
    assert _parse_durations(log) == {"tests/x.py::test_a[ctc]": 14.5, "tests/y.py::test_b": 0.3}
