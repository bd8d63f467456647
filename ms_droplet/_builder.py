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

This module is the ``PyBuilder`` adapter. The worker processes run
:mod:`ms_droplet._builder_worker` as a script (so they do not import the ``ms_droplet`` package
and whatever that registers) and exchange length-prefixed pickled messages with the parent over a
pair of pipes, like TVM's ``tvm.exec.popen_worker``; :mod:`ms_droplet._builder_pool` is the
parent's side. All timeouts are enforced by the parent, so a build that hangs while holding the
worker's GIL is still killed on time. The implementation relies on ``poll`` on pipes and
therefore supports POSIX systems only.
"""

from __future__ import annotations

import logging
import math
import numbers
import pickle
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import cloudpickle
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.utils import cpu_count

from ._builder_pool import WorkerPool
from ._builder_worker import T_BUILD, T_EXPORT, serialize_params

__all__ = ["WarmBuilder"]

logger = logging.getLogger("ms_droplet.builder")


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
        self._pool = WorkerPool(
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
                (inp.mod, inp.target, serialize_params(inp.params)),
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
