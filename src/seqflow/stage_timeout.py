"""Every pipeline stage ends within its limit, ``flow.timeouts.<stage>`` seconds: nothing hangs silently.

Why not Prefect's task ``timeout_seconds`` (read in Prefect 3.8.8's ``task_engine`` and
``_internal/concurrency/cancellation.py``, then tried here with Ray 2.60): for a sync task on the
main thread Prefect arms SIGALRM, whose handler raises ``CancelledError``; on any other thread it
injects the exception with ``PyThreadState_SetAsyncExc``, which fires only when that thread next
runs Python bytecode. A stage waiting in C sees neither in time. The train stage waits in
``ray.get`` on the Ray Train controller, and Ray's signal check keeps an exception raised by a
signal handler (anything but ``KeyboardInterrupt``) until the object arrives: a task limited to
3 s that waited on a 20-s Ray task ended after 21 s, as a ``SystemError`` rather than a timeout,
and the Ray Train controller and its workers would go on training.

So each stage's task function is wrapped by :func:`limited`, with its own watchdog thread. At the
deadline it

1. interrupts the stage's thread once (SIGALRM, handled by this module, on the main thread;
   ``PyThreadState_SetAsyncExc`` on another), which ends a stage running Python or waiting in a
   system call that returns on a signal (``time.sleep``, a subprocess wait, a socket);
2. runs the stage's abort hook: the train stage kills its Ray Train controller and workers
   (:func:`seqflow.train.abort.abort_ray_train`), so its ``ray.get`` returns and no rank trains on;
3. turns whatever the stage then raises (or returns) into :class:`StageTimeoutError`, a
   ``TimeoutError``: Prefect marks the task run ``TimedOut`` (Failed), the flow run fails, and
   :func:`seqflow.flow.run_pipeline` marks the MLflow runs FAILED (:mod:`seqflow.fault_state`);
4. if the stage is still running ``flow.timeout_grace_s`` seconds later (blocked in C code that
   ignores signals), ends the process (:func:`hard_exit_on_hang`, set by ``run_pipeline`` and,
   for scheduled runs, by :func:`seqflow.deploy.run_lock`): MLflow
   runs FAILED, Prefect flow run FAILED, workdir lock released, the one line on stderr, child
   processes (local Ray, Prefect's temporary server) killed, exit status :data:`EXIT_TIMEOUT`.

A timed-out stage is not retried (:func:`not_timed_out` as Prefect's ``retry_condition_fn``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Callable, Iterator

from seqflow.errors import ConfigError, SeqflowError

log = logging.getLogger("seqflow.pipeline")

EXIT_TIMEOUT = 124  # as GNU timeout(1)
KILL_WAIT_S = 3.0   # hard end: SIGTERM, then SIGKILL after this
ABORT_WAIT_S = 10.0  # how long the timeout error waits for the abort hook's description


class StageTimeoutError(SeqflowError, TimeoutError):
    """A pipeline stage ran past ``flow.timeouts.<key>`` and was stopped.

    Attributes:
        stage: the Prefect task name (``train``); key: the config key (``flow.timeouts.train``);
        limit_s: the limit [s]; elapsed_s: seconds from the stage's start to its end (or to now).
    """

    def __init__(self, stage: str, key: str, limit_s: float, elapsed_s: float, detail: str = "") -> None:
        self.stage, self.key, self.limit_s, self.elapsed_s = stage, key, float(limit_s), float(elapsed_s)
        super().__init__(f"stage {stage!r} exceeded {key}={limit_s:g} s (stopped after {elapsed_s:.1f} s"
                         + (f"; {detail}" if detail else "") + f"; raise {key} if it needs longer)")


class _Interrupt(BaseException):
    """Raised in the stage's thread at its deadline; :func:`limited` turns it into StageTimeoutError.
    A ``BaseException`` so the stage's own ``except Exception`` blocks do not swallow it, and not a
    ``KeyboardInterrupt``, which the stages treat as a user's stop (KILLED)."""


def config_key(stage: str) -> str:
    """``flow.timeouts.<stage>`` with ``-`` as ``_`` (``start-mining-run`` → ``flow.timeouts.start_mining_run``)."""
    return "flow.timeouts." + stage.replace("-", "_")


def limits(cfg: dict, stage: str) -> tuple[float, float]:
    """``(limit, grace)`` in seconds for ``stage`` from a composed config (plain dict).

    Raises:
        ConfigError: ``flow.timeouts.<stage>`` or ``flow.timeout_grace_s`` missing (values are
            range-checked by the config schema, :mod:`seqflow.schema.table`).
    """
    flow_cfg = cfg.get("flow") or {}
    key = config_key(stage)
    value = (flow_cfg.get("timeouts") or {}).get(key.rsplit(".", 1)[1])
    if value is None:
        raise ConfigError(f"{key} is not set: every stage needs a limit in seconds (conf/flow/default.yaml)")
    if flow_cfg.get("timeout_grace_s") is None:
        raise ConfigError("flow.timeout_grace_s is not set (conf/flow/default.yaml)")
    return float(value), float(flow_cfg["timeout_grace_s"])


def check_timeouts(cfg: dict, stages: list[str]) -> None:
    """Fail before any work when a stage of ``stages`` has no limit (see :func:`limits`)."""
    for stage in stages:
        limits(cfg, stage)


def not_timed_out(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed stage unless it timed out."""
    return not isinstance(getattr(state, "data", None), StageTimeoutError)


# -- interrupting the stage's thread ------------------------------------------------------------

_current: "_Watchdog | None" = None  # the main thread's running stage (stages run one at a time)
_running: "dict[str, _Watchdog]" = {}  # every running limited stage, by name
_handler_lock = threading.Lock()


def _on_sigalrm(signum, frame) -> None:
    """This module's SIGALRM handler (installed once, left installed: a late signal is ignored)."""
    wd = _current
    if wd is not None and wd.expired and not wd.finished:
        raise _Interrupt(wd.stage)


def _install_handler() -> bool:
    """Install :func:`_on_sigalrm` (main thread only). False where SIGALRM already has a handler
    that is not ours (then the stage is interrupted like a non-main thread)."""
    with _handler_lock:
        current = signal.getsignal(signal.SIGALRM)
        if current is _on_sigalrm:
            return True
        if current not in (signal.SIG_DFL, signal.SIG_IGN, None):
            return False
        signal.signal(signal.SIGALRM, _on_sigalrm)
        return True


class _Watchdog:
    """The deadline of one stage run (see the module docstring for what happens at it)."""

    def __init__(self, stage: str, limit_s: float, grace_s: float, abort: Callable[[], Any] | None) -> None:
        self.stage, self.key, self.limit_s, self.grace_s, self.abort = stage, config_key(stage), limit_s, grace_s, abort
        self.thread = threading.current_thread()
        self.use_signal = self.thread is threading.main_thread() and _install_handler()
        self.expired = self.finished = False
        self.aborted = ""
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._wake = threading.Event()
        self._aborted = threading.Event()  # the abort hook has returned (or there is none)
        self.t0 = time.monotonic()

    def start(self) -> None:
        global _current
        if self.use_signal:
            _current = self
        _running[self.stage] = self
        threading.Thread(target=self._watch, name=f"seqflow-timeout-{self.stage}", daemon=True).start()

    def expire(self) -> None:
        """End the stage now, as if its limit had passed."""
        self._wake.set()

    def finish(self) -> None:
        """The stage returned or raised: nothing more is sent to it (idempotent)."""
        global _current
        with self._lock:
            self.finished = True
        self._done.set()
        self._wake.set()
        if _current is self:
            _current = None
        if _running.get(self.stage) is self:
            del _running[self.stage]

    def error(self) -> StageTimeoutError:
        self._aborted.wait(ABORT_WAIT_S)  # its description goes into the message
        return StageTimeoutError(self.stage, self.key, self.limit_s, time.monotonic() - self.t0, self.aborted)

    def _watch(self) -> None:
        self._wake.wait(self.limit_s)
        with self._lock:
            if self.finished:
                return
            self.expired = True
            log.error("stage %r reached %s=%g s: stopping it", self.stage, self.key, self.limit_s)
            self._interrupt()
        if self.abort is not None:
            try:
                self.aborted = self.abort() or ""
            except Exception as e:  # noqa: BLE001 - the interrupt and the hard end still follow
                log.warning("stage %r: abort hook failed: %s: %s", self.stage, type(e).__name__, e)
        self._aborted.set()
        if self._done.wait(self.grace_s):
            return
        err = self.error()
        if _on_hang is None:
            log.error("stage %r is still running %.0f s after %s=%g s and cannot be stopped in this process",
                      self.stage, self.grace_s, self.key, self.limit_s)
            return
        _on_hang(err)

    def _interrupt(self) -> None:
        if self.use_signal:
            signal.pthread_kill(self.thread.ident, signal.SIGALRM)
        elif self.thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.thread.ident), ctypes.py_object(_Interrupt))


def run_limited(stage: str, limit_s: float, grace_s: float, fn: Callable, *args,
                abort: Callable[[], Any] | None = None, **kwargs):
    """``fn(*args, **kwargs)``, ended at ``limit_s`` seconds (see the module docstring).

    Args:
        abort: called (on the watchdog thread) just after the interrupt; returns a short
            description of what it stopped (part of the error message) or None.

    Raises:
        StageTimeoutError: the stage ran past ``limit_s`` (chained to what it raised then).
    """
    wd = _Watchdog(stage, limit_s, grace_s, abort)
    wd.start()
    try:
        try:
            result = fn(*args, **kwargs)
        finally:
            wd.finish()
    except BaseException as e:
        wd.finish()  # again: the one interrupt may have landed inside the first call
        if wd.expired:
            raise wd.error() from e
        raise
    if wd.expired:
        raise wd.error()
    return result


def running_stages() -> dict:
    """``{stage name: watchdog}`` of the limited stages running now; ``watchdog.expire()`` ends
    one at once, as if its limit had passed (``.limit_s``, ``.t0``: its limit and monotonic start)."""
    return dict(_running)


def _find_cfg(args: tuple, kwargs: dict) -> dict:
    for value in (kwargs.get("cfg"), *args):
        if isinstance(value, dict) and "flow" in value:
            return value
    raise TypeError("a limited stage needs the composed config (a dict with a 'flow' key) as an argument")


def limited(stage: str, abort: Callable[[], Any] | None = None) -> Callable:
    """Decorator for a stage's function (under Prefect's ``@task``): each call ends within the
    config's ``flow.timeouts.<stage>`` (:func:`run_limited`). The function must take the
    composed config (plain dict with a ``flow`` key) as an argument (``cfg``)."""

    def deco(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            limit_s, grace_s = limits(_find_cfg(args, kwargs), stage)
            return run_limited(stage, limit_s, grace_s, fn, *args, abort=abort, **kwargs)

        return wrapper

    return deco


# -- the hard end --------------------------------------------------------------------------------

_on_hang: Callable[[StageTimeoutError], None] | None = None


def kill_children(wait_s: float = KILL_WAIT_S) -> int:
    """SIGTERM every descendant process of this one, SIGKILL those alive ``wait_s`` later;
    returns how many there were."""
    import psutil

    procs = psutil.Process().children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=wait_s)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=wait_s)
    return len(procs)


@contextlib.contextmanager
def hard_exit_on_hang(mark: Callable[[StageTimeoutError], None], command: str = "pipeline") -> Iterator[None]:
    """Within the block, a stage still running ``flow.timeout_grace_s`` after its limit ends the
    process: ``mark(err)`` (record true state, release the lock), ``seqflow <command>: <err>`` on
    stderr, child processes killed (:func:`kill_children`), ``os._exit(EXIT_TIMEOUT)``."""
    global _on_hang

    def end(err: StageTimeoutError) -> None:
        err = StageTimeoutError(err.stage, err.key, err.limit_s, err.elapsed_s,
                                "it did not return after the interrupt; process ended")
        try:
            mark(err)
        except BaseException as e:  # noqa: BLE001 - the exit must happen
            log.error("marking the timed-out run failed: %s: %s", type(e).__name__, e)
        print(f"seqflow {command}: {err}", file=sys.stderr, flush=True)
        with contextlib.suppress(BaseException):
            kill_children()
        os._exit(EXIT_TIMEOUT)

    previous, _on_hang = _on_hang, end
    try:
        yield
    finally:
        _on_hang = previous


@contextlib.contextmanager
def reported(command: str, verbose: bool) -> Iterator[None]:
    """Run the block; a :class:`StageTimeoutError` prints ``seqflow <command>: <message>`` on stderr
    (after the traceback when ``verbose``) and exits with :data:`EXIT_TIMEOUT`.

    Raises:
        SystemExit: status :data:`EXIT_TIMEOUT` on a stage timeout; other exceptions pass through.
    """
    try:
        yield
    except StageTimeoutError as e:
        if verbose:
            traceback.print_exc()
        print(f"seqflow {command}: {e}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_TIMEOUT) from None
