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
"""Re-measure compiled kernels interleaved in one process, rotating the order every round.

Latencies of one kernel drift by tens of percent between runner calls on a busy or virtual
machine, so kernels are only compared when measured alternately, close in time, with identical
evaluator settings. A fixed order is biased too (on a 2-core Zen VM the kernel timed second in
A B A B ... was always 3-4 % slower, two identical kernels included), so every round rotates
which timer goes first and every other round runs backwards: A B C, C B A, B C A, A C B, ...
Each timer is first and last equally often over ``2 * n`` rounds. Medians of the rounds, and
paired per-round ratios, are what reports compare.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.runner import local_runner, rpc_runner

__all__ = ["interleaved_order", "measure_interleaved", "numpy_matmul_timer", "time_interleaved"]

#: A timer: called once per round, returns that round's samples in seconds.
Timer = Callable[[], Sequence[float]]


def interleaved_order(num_timers: int, round_index: int) -> list[int]:
    """The order in which ``num_timers`` timers run in round ``round_index``.

    Round ``r`` rotates the timers by ``r // 2`` and reverses the result when ``r`` is odd:
    for three timers A B C, C B A, B C A, A C B, C A B, B A C, then again.
    """
    if num_timers < 1:
        raise ValueError(f"num_timers must be >= 1, got {num_timers}")
    shift = (round_index // 2) % num_timers
    order = list(range(shift, num_timers)) + list(range(shift))
    return order[::-1] if round_index % 2 else order


def time_interleaved(timers: Sequence[Timer], *, rounds: int) -> list[list[list[float]]]:
    """Call every timer once per round, in the order of :func:`interleaved_order`.

    Parameters
    ----------
    timers : Sequence[Callable[[], Sequence[float]]]
        Each call returns that round's samples in seconds.
    rounds : int
        Number of rounds (use an even multiple of ``len(timers)`` to balance the positions).

    Returns
    -------
    samples : list[list[list[float]]]
        ``samples[i][r]`` is what timer ``i`` returned in round ``r``: per-round groups, so
        that callers can form paired per-round ratios.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    out: list[list[list[float]]] = [[] for _ in timers]
    for r in range(rounds):
        for i in interleaved_order(len(timers), r):
            out[i].append([float(x) for x in timers[i]()])
    return out


def measure_interleaved(
    mods: Sequence[tvm.IRModule],
    target: tvm.target.Target,
    *,
    rounds: int = 10,
    number: int = 3,
    repeat: int = 3,
    min_repeat_ms: int = 100,
    extra_timers: Sequence[Timer] = (),
    session: Any = None,
) -> list[list[float]]:
    """Build each scheduled module and time them alternately, rotating the order each round.

    Parameters
    ----------
    mods : Sequence[IRModule]
        Scheduled modules (e.g. ``sch.mod`` of database records).
    target : Target
        The target the modules were tuned for.
    rounds : int
        Rounds; each round times every module once (``repeat`` samples).
    number, repeat, min_repeat_ms : int
        ``time_evaluator`` settings, the same for every module.
    extra_timers : Sequence[Callable[[], Sequence[float]]]
        Other things to time in the same rounds, after the modules (e.g.
        :func:`numpy_matmul_timer`); each call returns that round's samples in seconds.
    session : tvm.rpc.RPCSession, optional
        Measure on this remote device (e.g. from ``tvm.rpc.connect_tracker(...).request(key)``)
        instead of this machine's CPU. The modules are exported as MetaSchedule's builder does
        and uploaded.

    Returns
    -------
    seconds : list[list[float]]
        For each module, then each extra timer, its samples over all rounds, round by round
        (``repeat`` samples per round for the modules).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    timers: list[Timer] = []
    with tempfile.TemporaryDirectory(prefix="ms_droplet_measure_") as tmp:
        for i, mod in enumerate(mods):
            timers.append(
                _kernel_timer(
                    mod,
                    target,
                    os.path.join(tmp, f"kernel{i}.tar"),
                    session=session,
                    number=number,
                    repeat=repeat,
                    min_repeat_ms=min_repeat_ms,
                )
            )
        timers.extend(extra_timers)
        per_round = time_interleaved(timers, rounds=rounds)
    return [[x for group in groups for x in group] for groups in per_round]


def _kernel_timer(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    path: str,
    *,
    session: Any,
    number: int,
    repeat: int,
    min_repeat_ms: int,
) -> Timer:
    lib = tvm.compile(mod, target=target)
    args_info = [a.as_json() for a in ArgInfo.from_entry_func(mod, remove_preproc=True)]
    device_type = "cpu" if target.kind.name in ("llvm", "c") else target.kind.name
    if session is None:
        lib = lib.jit()
        dev = tvm.device(device_type, 0)
        args = local_runner.default_alloc_argument(dev, args_info, 1)[0]
    else:
        from tvm.support.tar import tar

        lib.export_library(path, fcompile=tar)
        lib = rpc_runner.default_upload_module(session, path, os.path.basename(path))
        dev = session.device(device_type, 0)
        args = rpc_runner.default_alloc_argument(session, dev, args_info, 1)[0]
    f = lib.time_evaluator(
        lib.entry_name, dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
    )
    return lambda: f(*args).results


def numpy_matmul_timer(
    m: int, n: int, k: int, *, number: int = 3, repeat: int = 3, min_repeat_ms: int = 100
) -> Timer:
    """A timer of numpy's float32 ``(m, k) @ (k, n)`` with ``time_evaluator``'s semantics.

    Each sample is the mean of ``number`` calls, ``number`` grown (as ``time_evaluator`` does)
    until one sample takes at least ``min_repeat_ms``; ``repeat`` samples per call.
    """
    rng = np.random.default_rng(0)
    a = rng.random((m, k), dtype=np.float32)
    b = rng.random((k, n), dtype=np.float32)
    c = np.empty((m, n), dtype=np.float32)
    np.matmul(a, b, out=c)  # warm-up: BLAS threads, page faults

    def timer() -> list[float]:
        count = number
        samples = []
        for _ in range(repeat):
            while True:
                start = time.perf_counter()
                for _ in range(count):
                    np.matmul(a, b, out=c)
                elapsed = time.perf_counter() - start
                if elapsed * 1e3 >= min_repeat_ms or count >= 1 << 20:
                    break
                count *= 2
            samples.append(elapsed / count)
        return samples

    return timer
