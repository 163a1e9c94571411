"""Running the suite in parallel (``pytest -n 2 --dist loadgroup``, pytest-xdist): per-worker
isolation of what tests share through the environment, and a longest-first schedule.

Isolation (:func:`isolate_worker`, called from ``tests/conftest.py`` at import, before any test
module imports Prefect or Ray): each xdist worker (``PYTEST_XDIST_WORKER`` = ``gw0``, ``gw1``, …)
gets its own

* ``PREFECT_HOME`` (``<PREFECT_HOME or ~/.prefect>/xdist-<worker>``): Prefect's settings, profiles
  and the temporary API server's SQLite DB are never shared by two processes;
* ``RAY_TMPDIR`` (``<tmp>/seqflow-xdist-<worker>``): the Ray sessions, sockets, logs and
  ``ray_current_cluster`` file of an in-process ``ray.init`` (and of the ``seqflow`` processes
  the tests start) never meet the other worker's, so nothing can join the other worker's cluster;
* ``SEQFLOW_ONNX_CACHE`` (unless set): no two workers export into one cache folder at once.

Every test already works in its own ``tmp_path`` (xdist gives each worker its own base temp) and
every server a test starts takes a free port.

Schedule (:func:`schedule`, a ``pytest_collection_modifyitems`` hook run first in each worker):
xdist's ``loadgroup`` hands out work units in collection order, a new one to a worker when it has
at most two tests left. Each test whose recorded duration (``tests/durations.json``; unknown:
:data:`UNKNOWN_SLOW_S` for ``@pytest.mark.slow`` tests, else :data:`UNKNOWN_S`) reaches
:data:`ALONE_S` is a unit of its own; the other tests of a file form one unit (one set-up of its
module fixtures). Units go out longest first, so the last minutes hold short tests only. Serial
runs (no xdist) keep pytest's order.

Refresh ``tests/durations.json`` after adding slow tests::

    .venv/bin/python -m pytest -q -n 2 --dist loadgroup --durations=0 tests | tee /tmp/t.log
    .venv/bin/python tests/_schedule.py /tmp/t.log
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

DURATIONS = Path(__file__).with_name("durations.json")
ALONE_S = 10.0      # a test at least this long [s] is a work unit of its own
UNKNOWN_S = 1.0     # estimate [s] for a test not in durations.json
UNKNOWN_SLOW_S = 5.0  # ... marked @pytest.mark.slow (below ALONE_S: grouped with its file)


def isolate_worker(environ=os.environ) -> str | None:
    """Give this xdist worker its own Prefect home, Ray temp dir and ONNX cache (see the module
    docstring); returns the worker id, or None outside xdist (nothing is changed)."""
    wid = environ.get("PYTEST_XDIST_WORKER")
    if not wid:
        return None
    home = Path(environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    environ["PREFECT_HOME"] = str(home / f"xdist-{wid}")
    # a short path: Ray's Unix sockets live below it (108-byte limit)
    environ["RAY_TMPDIR"] = os.path.join(tempfile.gettempdir(), f"seqflow-xdist-{wid}")
    environ.setdefault("SEQFLOW_ONNX_CACHE", str(Path.home() / ".cache" / "seqflow" / f"onnx-xdist-{wid}"))
    for d in (environ["PREFECT_HOME"], environ["RAY_TMPDIR"]):
        os.makedirs(d, exist_ok=True)
    return wid


def _recorded() -> dict[str, float]:
    try:
        return {k: float(v) for k, v in json.loads(DURATIONS.read_text()).items()}
    except FileNotFoundError:
        return {}


def schedule(items: list, recorded: dict[str, float] | None = None) -> None:
    """Under xdist: mark each item's work unit (``xdist_group``) and sort the units longest first
    (stable: a file's tests keep their order). ``recorded``: nodeid -> seconds (default
    ``tests/durations.json``). Outside xdist: nothing."""
    import pytest

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    recorded = _recorded() if recorded is None else recorded

    def seconds(item) -> float:
        if item.nodeid in recorded:
            return recorded[item.nodeid]
        return UNKNOWN_SLOW_S if item.get_closest_marker("slow") else UNKNOWN_S

    weight: dict[str, float] = defaultdict(float)
    unit_of = {}
    for item in items:
        s = seconds(item)
        unit = item.nodeid if s >= ALONE_S else item.nodeid.split("::", 1)[0]
        unit_of[item.nodeid] = unit
        weight[unit] += s
        if unit != item.nodeid:
            item.add_marker(pytest.mark.xdist_group(unit))
    order = {nid: i for i, nid in enumerate(item.nodeid for item in items)}
    items.sort(key=lambda it: (-weight[unit_of[it.nodeid]], order[it.nodeid]))


def _parse_durations(log: str) -> dict[str, float]:
    """Per-test seconds (setup + call + teardown) from pytest's ``--durations=0`` lines."""
    out: dict[str, float] = defaultdict(float)
    for m in re.finditer(r"^([0-9.]+)s (?:setup|call|teardown)\s+(\S+)$", log, re.M):
        out[re.sub(r"@[^@\]]*$", "", m.group(2))] += float(m.group(1))  # xdist's "@<group>" suffix
    return out


if __name__ == "__main__":  # tests/_schedule.py LOG: write tests/durations.json from a --durations=0 log
    got = _parse_durations(Path(sys.argv[1]).read_text())
    keep = {k: round(v, 1) for k, v in sorted(got.items(), key=lambda kv: -kv[1]) if v >= 0.5}
    tmp = DURATIONS.with_suffix(".tmp")
    tmp.write_text(json.dumps(keep, indent=1) + "\n")
    tmp.replace(DURATIONS)
    print(f"{DURATIONS}: {len(keep)} tests >= 0.5 s, {sum(keep.values()):.0f} s")
