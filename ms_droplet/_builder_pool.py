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
"""The parent side of :class:`~ms_droplet.WarmBuilder`: its worker processes and event loop.

:class:`WorkerPool` starts workers (:mod:`ms_droplet._builder_worker`), hands them candidates
over their pipes, enforces the start-up and per-candidate timeouts with ``poll`` (so a build that
hangs while holding the worker's GIL is still killed on time), replaces a worker whose candidate
hangs or crashes, recycles workers after ``max_uses_per_worker`` builds and kills them all on
shutdown. POSIX only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import select
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import cloudpickle
from tvm.support.popen_pool import kill_child_processes

from ._builder_worker import BOOTSTRAP, HEADER, PROGRAM, T_BUILD, T_EXPORT, WORKER_ENV, Response

__all__ = ["WorkerPool"]

logger = logging.getLogger("ms_droplet.builder")

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
    """One worker process running :func:`ms_droplet._builder_worker.main`, driven by the parent."""

    def __init__(self, env: dict[str, str]) -> None:
        main_read, worker_write = os.pipe()
        worker_read, main_write = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", BOOTSTRAP, str(worker_read), str(worker_write)],
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
        message = memoryview(HEADER.pack(len(data)) + data)
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

    def recv(self) -> Response:
        """Read one response; call only when :attr:`rfd` is readable."""
        (size,) = HEADER.unpack(self._read_exact(HEADER.size))
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


class WorkerPool:
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
        env[WORKER_ENV] = json.dumps(
            {
                "parent": os.getpid(),
                # The parent-death signal fires when the *thread* that forked exits, so it is
                # only safe for workers started from the main thread; the watchdog covers the rest.
                "pdeathsig": sys.platform.startswith("linux")
                and threading.current_thread() is threading.main_thread(),
                "sys_path": [p or os.getcwd() for p in sys.path if isinstance(p, str)],
                "program": PROGRAM,
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
