# Licensed to the Apache Software Foundation (ASF) under one
# or more contributor license agreements.  See the NOTICE file
# distributed with this work for additional information
# regarding copyright ownership.  The ASF licenses this file
# to you under the Apache License, Version 2.0 (the
# "License"); you may not use this file except in compliance
# with the License.  You may obtain a copy of the License at
#
#   http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing,
# software distributed under the License is distributed on an
# "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY
# KIND, either express or implied.  See the License for the
# specific language governing permissions and limitations
# under the License.
"""A MetaSchedule builder whose worker processes stay warm across ``build()`` calls.

TVM's :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder` creates a new
:class:`~tvm.support.popen_pool.PopenPoolExecutor` on every ``build()`` call.  Every fresh
worker imports ``tvm.s_tir.tensor_intrin`` inside the first candidate's build, which takes
tens of seconds on a small machine and counts against that candidate's timeout.

:class:`WarmBuilder` is a drop-in replacement that

* starts its workers lazily on the first ``build()`` call and keeps them across calls;
* performs the expensive imports once per worker at start-up, under a separate, generous
  start-up timeout, so that the per-candidate timeout measures only that candidate's build;
* reports a candidate that hangs or crashes its worker as a build failure and replaces the
  worker, without failing the other candidates of the batch;
* recycles a worker after ``max_uses_per_worker`` builds, bounding the memory growth that made
  TVM restart its pool on every call;
* never leaves a worker process behind: ``shutdown()``, the context-manager protocol, a
  ``weakref.finalize`` finalizer (which also runs at interpreter exit, including after
  Ctrl-C) and, on Linux, a parent-death signal plus a parent watchdog in every worker.

A worker executes this file as a script (so it does not import the ``ms_droplet`` package
and whatever that registers) and exchanges length-prefixed pickled messages with the
parent over a pair of pipes, like TVM's ``tvm.exec.popen_worker``.  All timeouts are enforced
by the parent, so a build that hangs while holding the worker's GIL is still killed on time.
The implementation relies on ``select`` on pipes and therefore supports POSIX systems only.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
from tvm.ir import IRModule
from tvm.ir.utils import derived_object
from tvm.runtime import Module, Tensor, load_param_dict, save_param_dict
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
from tvm.s_tir.meta_schedule.utils import cpu_count, get_global_func_with_default_on_worker
from tvm.support.popen_pool import kill_child_processes
from tvm.target import Target

__all__ = ["WarmBuilder"]

logger = logging.getLogger("ms_droplet.builder")

T_BUILD = Callable[[IRModule, Target, dict[str, Tensor] | None], Module]
T_EXPORT = Callable[[Module], str]

#: This file, which the worker processes run (without importing the ``ms_droplet`` package).
_PROGRAM = os.path.abspath(__file__)

#: Environment variable through which the parent hands its settings to a new worker.
_WORKER_ENV = "_MS_DROPLET_BUILDER_WORKER"

#: Code run by ``python -c`` in a new worker; it ends in :func:`_worker_main` of this file.
_BOOTSTRAP = """\
import json, os, signal, sys, threading, time
_cfg = json.loads(os.environ.pop("_MS_DROPLET_BUILDER_WORKER"))
# The parent owns the worker's life time: terminal Ctrl-C goes to the parent only.
signal.signal(signal.SIGINT, signal.SIG_IGN)
if _cfg["pdeathsig"]:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass
if os.getppid() != _cfg["parent"]:
    os._exit(0)
def _watch_parent(parent=_cfg["parent"]):
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=_watch_parent, name="parent-watchdog", daemon=True).start()
sys.path[:] = _cfg["sys_path"] + [p for p in sys.path if p not in _cfg["sys_path"]]
_program = {"__name__": "__ms_droplet_builder_worker__", "__file__": _cfg["program"]}
with open(_cfg["program"], encoding="utf-8") as _source:
    exec(compile(_source.read(), _cfg["program"], "exec"), _program)
_program["_worker_main"](int(sys.argv[1]), int(sys.argv[2]))
"""

#: Response of a worker: ``(None, value)`` on success, ``(traceback, None)`` on an exception.
_Response = tuple[str | None, Any]

# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

#: Build and export functions of this worker process, resolved once by :func:`_worker_warm_up`.
_WORKER_STATE: dict[str, Any] = {}


def _serialize_params(params: dict[str, Tensor] | None) -> bytearray | None:
    if params is None:
        return None
    return save_param_dict(params)


def _deserialize_params(params: bytearray | None) -> dict[str, Tensor] | None:
    if params is None:
        return None
    return load_param_dict(params)


def _worker_warm_up(
    f_build: str | T_BUILD | None,
    f_export: str | T_EXPORT | None,
    initializer: Callable[[], None] | None,
) -> int:
    """Prepare a worker process: run the initializer, resolve the functions, import TVM parts.

    Parameters
    ----------
    f_build : Union[None, str, T_BUILD]
        The build function, its global function name, or None for ``default_build``.
    f_export : Union[None, str, T_EXPORT]
        The export function, its global function name, or None for ``default_export``.
    initializer : Optional[Callable[[], None]]
        Called first, e.g. to register the global functions named by `f_build`/`f_export`.

    Returns
    -------
    pid : int
        The worker's process id.
    """
    if initializer is not None:
        initializer()
    _WORKER_STATE["f_build"] = get_global_func_with_default_on_worker(f_build, default_build)
    _WORKER_STATE["f_export"] = get_global_func_with_default_on_worker(f_export, default_export)
    # The expensive part: what `default_build`/`default_export` import on their first call.
    import tvm.s_tir.tensor_intrin  # noqa: F401
    from tvm.driver import build  # noqa: F401
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: F401
    from tvm.support.tar import tar  # noqa: F401

    return os.getpid()


def _worker_build(payload: bytes) -> str:
    """Build and export one candidate inside a warm worker.

    Parameters
    ----------
    payload : bytes
        The pickled ``(mod, target, serialized_params)`` of the candidate.

    Returns
    -------
    artifact_path : str
        The path of the exported module.
    """
    mod, target, params = pickle.loads(payload)
    rt_mod = _WORKER_STATE["f_build"](mod, target, _deserialize_params(params))
    return _WORKER_STATE["f_export"](rt_mod)


_WORKER_COMMANDS: dict[str, Callable[..., Any]] = {
    "warm_up": _worker_warm_up,
    "build": _worker_build,
}


def _worker_main(read_fd: int, write_fd: int) -> None:
    """The worker's loop: answer ``(command, args)`` requests until the parent goes away.

    Parameters
    ----------
    read_fd : int
        The pipe from the parent.
    write_fd : int
        The pipe to the parent.
    """
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        while True:
            header = reader.read(4)
            if len(header) < 4:
                return  # the parent closed the pipe
            (size,) = struct.unpack("<i", header)
            request = reader.read(size)
            response: _Response
            try:
                command, args = pickle.loads(request)  # the parent used cloudpickle
                response = (None, _WORKER_COMMANDS[command](*args))
            except Exception:
                response = (traceback.format_exc(), None)
            data = pickle.dumps(response, protocol=pickle.HIGHEST_PROTOCOL)
            writer.write(struct.pack("<i", len(data)) + data)
            writer.flush()


# --------------------------------------------------------------------------------------------
# Parent side
# --------------------------------------------------------------------------------------------

_WARMING, _IDLE, _BUSY = "warming", "idle", "busy"


def _wait_readable(fds: list[int], timeout: float) -> set[int]:
    """The fds among `fds` that are readable or closed, waiting at most `timeout` seconds."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR)
    timeout = min(max(0.0, timeout), 3600.0)  # the caller loops; poll() takes a C int of ms
    return {fd for fd, _ in poller.poll(math.ceil(timeout * 1000))}


class _WorkerDied(Exception):
    """The worker process closed its pipe (crashed or was killed)."""


class _Worker:
    """One worker process running :func:`_worker_main`, driven by the parent's event loop."""

    def __init__(self, env: dict[str, str]) -> None:
        main_read, worker_write = os.pipe()
        worker_read, main_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(worker_read), str(worker_write)],
                pass_fds=(worker_read, worker_write),
                env=env,
            )
        except BaseException:
            for fd in (main_read, worker_write, worker_read, main_write):
                os.close(fd)
            raise
        os.close(worker_read)
        os.close(worker_write)
        self.rfd: int = main_read
        self._wfd: int | None = main_write
        self.state: str = _WARMING
        self.deadline: float = math.inf
        self.task: int | None = None
        self.uses: int = 0
        self.started: float = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, command: str, args: tuple[Any, ...]) -> None:
        """Send a request; the worker itself keeps no time, the parent enforces timeouts."""
        data = cloudpickle.dumps((command, args), protocol=pickle.HIGHEST_PROTOCOL)
        message = memoryview(struct.pack("<i", len(data)) + data)
        try:
            while message:
                written = os.write(self._wfd, message)
                message = message[written:]
        except (OSError, TypeError) as err:
            raise _WorkerDied(str(err)) from err

    def _read_exact(self, size: int) -> bytes:
        chunks = []
        while size > 0:
            try:
                chunk = os.read(self.rfd, size)
            except OSError as err:
                raise _WorkerDied(str(err)) from err
            if not chunk:
                raise _WorkerDied("end of stream")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def recv(self) -> _Response:
        """Read one response; call only when :attr:`rfd` is readable."""
        (size,) = struct.unpack("<i", self._read_exact(4))
        data = self._read_exact(size)
        try:
            return pickle.loads(data)
        except Exception as err:
            return f"cannot unpickle the worker's response: {err!r}", None

    def exit_code(self, wait: float = 1.0) -> int | None:
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """Kill the process (and its children), reap it, and close the pipes."""
        if self.proc.poll() is None:
            try:
                kill_child_processes(self.proc.pid)
            except Exception:
                pass
            try:
                self.proc.kill()
            except OSError:
                pass
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            logger.warning("Builder worker %d did not exit after SIGKILL", self.proc.pid)
        for fd in (self.rfd, self._wfd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.rfd = -1
        self._wfd = None


class _WorkerPool:
    """The persistent workers of one :class:`WarmBuilder` (holds no reference to it)."""

    def __init__(
        self,
        max_workers: int,
        timeout_sec: float,
        startup_timeout_sec: float,
        max_uses_per_worker: int | None,
        initializer: Callable[[], None] | None,
        f_build: str | T_BUILD | None,
        f_export: str | T_EXPORT | None,
    ) -> None:
        self.max_workers = max_workers
        self.timeout_sec = timeout_sec
        self.startup_timeout_sec = startup_timeout_sec
        self.max_uses_per_worker = max_uses_per_worker
        self._warm_up_args = (f_build, f_export, initializer)
        self._workers: list[_Worker] = []
        self._owner_pid = os.getpid()
        self._run_lock = threading.Lock()  # one build() at a time
        self._state_lock = threading.Lock()  # guards _workers and _closed
        self._closed = False
        self.stats = {"builds": 0, "timeouts": 0, "crashes": 0, "started": 0, "recycled": 0}

    # -- bookkeeping -------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def pids(self) -> tuple[int, ...]:
        with self._state_lock:
            return tuple(w.pid for w in self._workers if w.proc.poll() is None)

    def _spawn(self) -> _Worker:
        env = dict(os.environ)
        env[_WORKER_ENV] = json.dumps(
            {
                "parent": os.getpid(),
                # The parent-death signal fires when the *thread* that forked exits, so it is
                # only safe for workers started from the main thread; the watchdog covers the rest.
                "pdeathsig": sys.platform.startswith("linux")
                and threading.current_thread() is threading.main_thread(),
                "sys_path": [p or os.getcwd() for p in sys.path if isinstance(p, str)],
                "program": _PROGRAM,
            }
        )
        with self._state_lock:
            if self._closed:
                raise RuntimeError("WarmBuilder has been shut down")
            worker = _Worker(env)
            self._workers.append(worker)
        worker.deadline = time.monotonic() + self.startup_timeout_sec
        try:
            worker.send("warm_up", self._warm_up_args)
        except _WorkerDied:
            pass  # noticed as end of stream by the event loop
        self.stats["started"] += 1
        logger.debug("Started builder worker %d", worker.pid)
        return worker

    def _discard(self, worker: _Worker) -> None:
        with self._state_lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.kill()

    # -- the event loop ----------------------------------------------------------------------

    def run(self, payloads: list[bytes]) -> list[tuple[str | None, str | None]]:
        """Build all payloads; see :meth:`WarmBuilder.build`."""
        if self._closed:
            raise RuntimeError("WarmBuilder has been shut down")
        if os.getpid() != self._owner_pid:
            raise RuntimeError("WarmBuilder cannot be used in a forked child process")
        with self._run_lock:
            try:
                return self._run(payloads)
            except BaseException:
                # Busy or warming workers would answer later, out of turn: drop them.
                with self._state_lock:
                    stale = [w for w in self._workers if w.state != _IDLE]
                for worker in stale:
                    self._discard(worker)
                raise

    def _run(self, payloads: list[bytes]) -> list[tuple[str | None, str | None]]:
        results: list[tuple[str | None, str | None] | None] = [None] * len(payloads)
        pending = deque(range(len(payloads)))
        startup_failures: list[str] = []
        # Drop workers that died while idle (e.g. killed from outside).
        for worker in list(self._workers):
            if worker.proc.poll() is not None:
                logger.warning(
                    "Builder worker %d died while idle (exit code %s); replacing it",
                    worker.pid,
                    worker.proc.returncode,
                )
                self._discard(worker)
        while True:
            if self._closed:
                raise RuntimeError("WarmBuilder was shut down during build()")
            busy = [w for w in self._workers if w.state == _BUSY]
            # Start workers for the remaining work; warm-up is never counted against a candidate.
            wanted = min(self.max_workers, len(pending) + len(busy))
            while pending and len(self._workers) < wanted:
                self._spawn()
            # Hand candidates to idle workers, recycling the ones that are used up.
            for worker in [w for w in self._workers if w.state == _IDLE]:
                if not pending:
                    break
                if self.max_uses_per_worker is not None and worker.uses >= self.max_uses_per_worker:
                    logger.info(
                        "Recycling builder worker %d after %d builds", worker.pid, worker.uses
                    )
                    self.stats["recycled"] += 1
                    self._discard(worker)
                    if len(self._workers) < self.max_workers:
                        self._spawn()
                    continue
                index = pending.popleft()
                worker.state, worker.task = _BUSY, index
                worker.deadline = time.monotonic() + self.timeout_sec
                try:
                    worker.send("build", (payloads[index],))
                except _WorkerDied:
                    pass  # noticed as end of stream below
            waiting = [w for w in self._workers if w.state in (_WARMING, _BUSY)]
            if not waiting:
                break
            delay = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
            readable = _wait_readable([w.rfd for w in waiting], delay)
            now = time.monotonic()
            for worker in waiting:
                if worker.rfd in readable:
                    self._on_response(worker, results, startup_failures)
                elif now >= worker.deadline:
                    self._on_deadline(worker, results, startup_failures)
            if startup_failures and len(startup_failures) > self.max_workers:
                raise RuntimeError(
                    f"WarmBuilder: {len(startup_failures)} builder workers failed to start; "
                    f"the last error:\n{startup_failures[-1]}"
                )
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _on_response(
        self,
        worker: _Worker,
        results: list[tuple[str | None, str | None] | None],
        startup_failures: list[str],
    ) -> None:
        try:
            error, value = worker.recv()
        except _WorkerDied:
            code = worker.exit_code()
            if worker.state == _WARMING:
                startup_failures.append(f"worker {worker.pid} exited with code {code}")
                logger.warning(
                    "Builder worker %d exited during start-up (exit code %s)", worker.pid, code
                )
            else:
                self.stats["crashes"] += 1
                results[worker.task] = (  # type: ignore[index]
                    None,
                    f"WarmBuilder: Crash, the worker process exited with code {code} while "
                    f"building (timeout was {self.timeout_sec} seconds); the worker was replaced",
                )
                logger.warning(
                    "Builder worker %d crashed (exit code %s) while building candidate %d",
                    worker.pid,
                    code,
                    worker.task,
                )
            self._discard(worker)
            return
        if worker.state == _WARMING:
            if error is None:
                worker.state, worker.deadline = _IDLE, math.inf
                logger.info(
                    "Builder worker %d ready after %.1f s",
                    worker.pid,
                    time.monotonic() - worker.started,
                )
            else:
                startup_failures.append(error)
                logger.warning("Builder worker %d failed to start:\n%s", worker.pid, error)
                self._discard(worker)
            return
        index = worker.task
        assert index is not None
        worker.state, worker.task, worker.deadline = _IDLE, None, math.inf
        worker.uses += 1
        self.stats["builds"] += 1
        if error is None:
            results[index] = (value, None)
        else:
            results[index] = (None, "WarmBuilder: An exception occurred\n" + error)

    def _on_deadline(
        self,
        worker: _Worker,
        results: list[tuple[str | None, str | None] | None],
        startup_failures: list[str],
    ) -> None:
        if worker.state == _WARMING:
            startup_failures.append(
                f"worker {worker.pid} not ready after {self.startup_timeout_sec} seconds"
            )
            logger.warning(
                "Builder worker %d not ready after %.1f s (start-up timeout); killing it",
                worker.pid,
                self.startup_timeout_sec,
            )
        else:
            self.stats["timeouts"] += 1
            results[worker.task] = (  # type: ignore[index]
                None,
                f"WarmBuilder: Timeout, killed after {self.timeout_sec} seconds",
            )
            logger.warning(
                "Builder worker %d timed out after %.1f s on candidate %d; replacing it",
                worker.pid,
                self.timeout_sec,
                worker.task,
            )
        self._discard(worker)

    def warm_up(self, num_workers: int) -> None:
        """Start workers until `num_workers` are ready; raise if they cannot start."""
        if self._closed:
            raise RuntimeError("WarmBuilder has been shut down")
        with self._run_lock:
            try:
                failures: list[str] = []
                while True:
                    while len(self._workers) < num_workers:
                        self._spawn()
                    waiting = [w for w in self._workers if w.state == _WARMING]
                    if not waiting:
                        return
                    delay = max(0.0, min(w.deadline for w in waiting) - time.monotonic())
                    readable = _wait_readable([w.rfd for w in waiting], delay)
                    now = time.monotonic()
                    for worker in waiting:
                        if worker.rfd in readable:
                            self._on_response(worker, [], failures)
                        elif now >= worker.deadline:
                            self._on_deadline(worker, [], failures)
                    if failures:
                        raise RuntimeError(
                            f"WarmBuilder: a builder worker failed to start:\n{failures[-1]}"
                        )
            except BaseException:
                with self._state_lock:
                    stale = [w for w in self._workers if w.state != _IDLE]
                for worker in stale:
                    self._discard(worker)
                raise

    def shutdown(self) -> None:
        """Kill all workers; idempotent, safe from finalizers and at interpreter exit."""
        with self._state_lock:
            self._closed = True
            workers, self._workers = self._workers, []
        if os.getpid() != self._owner_pid:
            return  # a forked child must not kill its parent's workers
        for worker in workers:
            worker.kill()
        if workers:
            logger.debug("Shut down %d builder worker(s)", len(workers))


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------


def _check_positive_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return int(value)


def _check_function(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str) and not callable(value):
        raise TypeError(
            f"{name} must be None, a global function name or a callable, got {type(value).__name__}"
        )
    if isinstance(value, str) and not value:
        raise ValueError(f"{name} must not be an empty string")


def _check_picklable(name: str, value: Any) -> None:
    if value is None or isinstance(value, str):
        return
    try:
        cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        raise TypeError(
            f"{name} must be picklable by cloudpickle to reach the worker processes ({err}); "
            "pass a TVM global function by its registered name instead"
        ) from err


@derived_object
class WarmBuilder(PyBuilder):
    """A drop-in :class:`~tvm.s_tir.meta_schedule.builder.Builder` with persistent workers.

    Builds like :class:`~tvm.s_tir.meta_schedule.builder.LocalBuilder` (same ``f_build`` /
    ``f_export`` defaults and artifacts: an exported ``.tar`` module in a fresh temporary
    directory), but keeps its worker processes warm across ``build()`` calls.

    Parameters
    ----------
    max_workers : Optional[int]
        The maximum number of worker processes. Defaults to the number of logical CPUs.
    timeout_sec : float
        The timeout in seconds for building one candidate. It starts when the candidate is
        handed to a ready worker, so worker start-up never counts against it.
    max_uses_per_worker : Optional[int]
        Recycle (kill and restart) a worker after this many builds, to bound the memory that
        worker processes accumulate. None never recycles.
    startup_timeout_sec : float
        The time a new worker may take to start, run `initializer` and import TVM's build
        dependencies (notably ``tvm.s_tir.tensor_intrin``).
    initializer : Optional[Callable[[], None]]
        Called once in every worker process at start-up, e.g. to register the global functions
        named by `f_build` / `f_export`.
    f_build : Union[None, str, T_BUILD]
        The build function, or the name of a global function. Defaults to
        ``s_tir.meta_schedule.builder.default_build``.
    f_export : Union[None, str, T_EXPORT]
        The export function, or the name of a global function. Defaults to
        ``s_tir.meta_schedule.builder.default_export``.

    Notes
    -----
    Workers start lazily, on the first ``build()`` call (or :meth:`warm_up`), and
    ``build()`` returns only once no worker is starting, so no start-up work runs in the
    background while a runner measures. A start-up failure (e.g. `initializer` raises or
    `f_build` names an unregistered function) raises ``RuntimeError`` from ``build()`` once
    more than `max_workers` workers failed to start, the analogue of ``LocalBuilder``'s
    constructor check. A failing, hanging or crashing *candidate* gives a ``BuilderResult``
    with ``artifact_path`` None and an ``error_msg`` starting with ``WarmBuilder:`` and
    containing ``An exception occurred``, ``Timeout`` or ``Crash``.

    Call :meth:`shutdown` or use the builder as a context manager to stop the workers; a
    ``weakref.finalize`` finalizer (registered with ``atexit``) also stops them when the
    builder is garbage-collected or the interpreter exits, including after Ctrl-C (which TVM's
    FFI turns into a ``RuntimeError`` when it interrupts ``build()``). Workers ignore SIGINT
    (the parent decides their fate) and, on Linux, die with their parent even when it is
    killed: by a parent-death signal if they were started from the main thread, else by a
    watchdog thread that polls the parent. They exit when their pipe closes as well.

    `f_build`, `f_export` and `initializer` travel to the workers with cloudpickle, so they
    must be picklable (TVM FFI functions such as ``default_build`` are not: name them by their
    global name). Worker processes see the parent's ``sys.path``, so functions from any module
    the parent can import are found; the workers do not import the ``ms_droplet`` package.
    """

    def __init__(
        self,
        *,
        max_workers: int | None = None,
        timeout_sec: float = 30.0,
        max_uses_per_worker: int | None = 256,
        startup_timeout_sec: float = 300.0,
        initializer: Callable[[], None] | None = None,
        f_build: str | T_BUILD | None = None,
        f_export: str | T_EXPORT | None = None,
    ) -> None:
        super().__init__()
        if max_workers is None:
            max_workers = cpu_count(logical=True)
        max_workers = _check_positive_int("max_workers", max_workers)
        timeout_sec = _check_positive_number("timeout_sec", timeout_sec)
        if max_uses_per_worker is not None:
            max_uses_per_worker = _check_positive_int("max_uses_per_worker", max_uses_per_worker)
        startup_timeout_sec = _check_positive_number("startup_timeout_sec", startup_timeout_sec)
        if initializer is not None and not callable(initializer):
            raise TypeError(
                f"initializer must be None or a callable, got {type(initializer).__name__}"
            )
        _check_function("f_build", f_build)
        _check_function("f_export", f_export)
        for name, value in (
            ("f_build", f_build),
            ("f_export", f_export),
            ("initializer", initializer),
        ):
            _check_picklable(name, value)
        if sys.platform == "win32":
            raise NotImplementedError("WarmBuilder supports POSIX systems only")
        self._pool = _WorkerPool(
            max_workers=max_workers,
            timeout_sec=timeout_sec,
            startup_timeout_sec=startup_timeout_sec,
            max_uses_per_worker=max_uses_per_worker,
            initializer=initializer,
            f_build=f_build,
            f_export=f_export,
        )
        self._f_build = f_build
        self._f_export = f_export
        self._initializer = initializer
        # Runs on shutdown(), on garbage collection and (atexit=True) at interpreter exit.
        self._finalizer = weakref.finalize(self, self._pool.shutdown)
        logger.info(
            "WarmBuilder: max_workers = %d, timeout_sec = %.1f, max_uses_per_worker = %s",
            max_workers,
            timeout_sec,
            max_uses_per_worker,
        )

    # -- settings (read-only) ----------------------------------------------------------------

    @property
    def max_workers(self) -> int:
        """The maximum number of worker processes."""
        return self._pool.max_workers

    @property
    def timeout_sec(self) -> float:
        """The per-candidate build timeout in seconds."""
        return self._pool.timeout_sec

    @property
    def max_uses_per_worker(self) -> int | None:
        """The number of builds after which a worker is recycled (None: never)."""
        return self._pool.max_uses_per_worker

    @property
    def startup_timeout_sec(self) -> float:
        """The start-up timeout of a worker in seconds."""
        return self._pool.startup_timeout_sec

    @property
    def initializer(self) -> Callable[[], None] | None:
        """The per-worker initializer."""
        return self._initializer

    @property
    def f_build(self) -> str | T_BUILD | None:
        """The build function or its global name (None: the default)."""
        return self._f_build

    @property
    def f_export(self) -> str | T_EXPORT | None:
        """The export function or its global name (None: the default)."""
        return self._f_export

    # -- state -------------------------------------------------------------------------------

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """The process ids of the live worker processes (empty before the first build)."""
        return self._pool.pids()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``builds``, ``timeouts``, ``crashes``, ``started`` and ``recycled``."""
        return dict(self._pool.stats)

    @property
    def closed(self) -> bool:
        """Whether :meth:`shutdown` has run."""
        return self._pool.closed

    # -- operations --------------------------------------------------------------------------

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        """Build the given inputs.

        Parameters
        ----------
        build_inputs : List[BuilderInput]
            The inputs to be built.

        Returns
        -------
        build_results : List[BuilderResult]
            One result per input, in order: the artifact path, or None and an error message.
        """
        build_inputs = list(build_inputs)
        if not build_inputs:
            return []
        payloads = [
            pickle.dumps(
                (inp.mod, inp.target, _serialize_params(inp.params)),
                protocol=pickle.HIGHEST_PROTOCOL,
            )
            for inp in build_inputs
        ]
        start = time.monotonic()
        outcomes = self._pool.run(payloads)
        failures = sum(1 for _, error in outcomes if error is not None)
        logger.debug(
            "WarmBuilder: built %d candidates in %.2f s, %d failed",
            len(outcomes),
            time.monotonic() - start,
            failures,
        )
        return [BuilderResult(path, error) for path, error in outcomes]

    def warm_up(self, num_workers: int | None = None) -> None:
        """Start workers now instead of on the first ``build()`` call.

        Parameters
        ----------
        num_workers : Optional[int]
            How many workers should be ready; defaults to `max_workers`.

        Raises
        ------
        RuntimeError
            If a worker fails to start (e.g. `initializer` raises, or `f_build` names a
            function that is not registered in the worker), or the builder was shut down.
        """
        if num_workers is None:
            num_workers = self.max_workers
        num_workers = _check_positive_int("num_workers", num_workers)
        if num_workers > self.max_workers:
            raise ValueError(
                f"num_workers must be <= max_workers ({self.max_workers}), got {num_workers}"
            )
        self._pool.warm_up(num_workers)

    def shutdown(self) -> None:
        """Kill all worker processes. Idempotent; ``build()`` raises afterwards."""
        self._finalizer()

    def __enter__(self) -> WarmBuilder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


# `derived_object` returns a wrapper class that forwards attributes but not special methods.
WarmBuilder.__enter__ = WarmBuilder._cls.__enter__  # type: ignore[attr-defined]
WarmBuilder.__exit__ = WarmBuilder._cls.__exit__  # type: ignore[attr-defined]
