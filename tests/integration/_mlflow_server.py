"""A real ``mlflow server`` process for tests: 127.0.0.1, a free port, SQLite and a proxied artifact
folder in a temp directory, its whole process group killed on exit.

>>> with MlflowServer(tmp_path / "mlflow-server") as server:   # starts in the background
...     server.wait_healthy()                                 # up to 120 s on a loaded box
...     mlflow.set_tracking_uri(server.url)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """``mlflow server --host 127.0.0.1 --port <free> --backend-store-uri sqlite:///<root>/mlflow.db
    --artifacts-destination <root>/mlartifacts --workers 1``, the command docs/mlflow-server.md
    gives, with MLflow's GenAI job runner off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: its
    huey consumers are not used by tracking and linger after SIGTERM). Output goes to
    ``<root>/server.log``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.artifacts = self.root / "mlartifacts"
        self.log_path = self.root / "server.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MlflowServer":
        self.root.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
               # mlflow execs `uvicorn` by name: the venv's bin must be on PATH even if not activated
               "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
        for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            env.pop(key, None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.artifacts), "--workers", "1"],
            cwd=self.root, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:]

    def wait_healthy(self, timeout_s: float = 120.0) -> float:
        """Block until ``GET /health`` answers 200; returns the seconds waited.

        Raises:
            AssertionError: the process exited, or no answer within ``timeout_s`` (with the log tail).
        """
        t0 = time.monotonic()
        while True:
            assert self.proc.poll() is None, f"mlflow server exited with {self.proc.returncode}:\n{self.log_tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2.0) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            waited = time.monotonic() - t0
            assert waited < timeout_s, f"mlflow server not healthy after {timeout_s:.0f} s:\n{self.log_tail()}"
            time.sleep(0.5)

    def __exit__(self, *exc) -> None:
        """SIGTERM to the whole process group (server, uvicorn worker), SIGKILL what is left after 15 s."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                pass
            try:  # the group outlives its leader when a child ignores SIGTERM
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self._log.close()
