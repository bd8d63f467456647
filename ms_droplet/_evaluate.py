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
"""Re-measure compiled kernels interleaved (A B A B ...) in one process.

Latencies of one kernel drift by tens of percent between runner calls on a busy or virtual
machine, so kernels are only compared when measured alternately, close in time, with identical
evaluator settings. Medians of the rounds are what reports compare.
"""

from __future__ import annotations

from collections.abc import Sequence

import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.runner.local_runner import default_alloc_argument

__all__ = ["measure_interleaved"]


def measure_interleaved(
    mods: Sequence[tvm.IRModule],
    target: tvm.target.Target,
    *,
    rounds: int = 10,
    number: int = 3,
    repeat: int = 3,
    min_repeat_ms: int = 100,
) -> list[list[float]]:
    """Build each scheduled module and time them alternately.

    Parameters
    ----------
    mods : Sequence[IRModule]
        Scheduled modules (e.g. ``sch.mod`` of database records).
    target : Target
        A CPU target of this machine.
    rounds : int
        Rounds; each round times every module once (``repeat`` samples).

    Returns
    -------
    seconds : list[list[float]]
        For each module, its samples over all rounds (``rounds * repeat`` values).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    dev = tvm.cpu(0)
    evaluators = []
    for mod in mods:
        lib = tvm.compile(mod, target=target).jit()
        args_info = ArgInfo.from_entry_func(mod, remove_preproc=True)
        args = default_alloc_argument(dev, [a.as_json() for a in args_info], 1)[0]
        f = lib.time_evaluator(
            lib.entry_name, dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
        )
        evaluators.append((f, args))
    out: list[list[float]] = [[] for _ in mods]
    for _ in range(rounds):
        for i, (f, args) in enumerate(evaluators):
            out[i].extend(float(x) for x in f(*args).results)
    return out
