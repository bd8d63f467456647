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
"""The adapter for TVM's own Droplet, ``post_optimization``, as a benchmark strategy.

TVM 0.27's ``PostOpt`` reads the exploration's records from a work dir, measures its candidates
with a ``LocalBuilder`` and ``LocalRunner`` of its own, keeps them in a temporary file it deletes,
prints instead of logging and draws from the global ``random``. :func:`run_post_opt` runs it so
that the benchmark still sees every candidate (a wrapped ``Space.run`` logs each one to the run's
``trials.jsonl``), its builds go through the bench's builder (the one every other strategy of
the bench uses: a ``LocalBuilder`` of its own, with PostOpt's 10 s timeout, starts fresh workers
for every batch and builds nothing on a slow machine), its prints go to ``post_opt.log``, its
randomness comes from the run's seed and its failures become results. :func:`restart_trials`
undoes the trial lines of an interrupted ``PostOpt``, which starts over on resume.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from .._trial_log import TrialLog
from ._layout import read_trials

__all__ = ["restart_trials", "run_post_opt"]

logger = logging.getLogger(__name__)


def restart_trials(work_dir: str, explored: int) -> None:
    """Keep the first ``explored`` lines of ``trials.jsonl``: an interrupted PostOpt starts over.

    The dropped lines are appended to ``trials.interrupted.jsonl`` (nothing measured is lost);
    ``trials.jsonl`` is replaced atomically.
    """
    trials_path = os.path.join(work_dir, "trials.jsonl")
    trials = read_trials(trials_path)
    if len(trials) <= explored:
        return
    with open(os.path.join(work_dir, "trials.interrupted.jsonl"), "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(t) + "\n" for t in trials[explored:]))
    with open(f"{trials_path}.tmp", "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(t) + "\n" for t in trials[:explored]))
    os.replace(f"{trials_path}.tmp", trials_path)


class _Overrides:
    """A stand-in for a module: the given attributes, everything else from ``base``."""

    def __init__(self, base: Any, **overrides: Any) -> None:
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def run_post_opt(
    work_dir: str,
    target: tvm.target.Target,
    *,
    trials: int,
    seed: int,
    log: TrialLog,
    builder: ms.builder.Builder | None = None,
) -> str | None:
    """TVM's own file-based Droplet (``tune_tir(..., post_optimization=True)``) on the records.

    Its ``Space.run`` is wrapped to log every candidate it measures (it keeps them in a
    temporary file it deletes); its prints go to ``work_dir/post_opt.log``. With ``builder``,
    the ``LocalBuilder`` it creates for each batch is replaced by that builder (its runner stays
    its own). Returns the error it raised, if any (the run then keeps the exploration's best
    kernel).
    """
    from tvm.s_tir.meta_schedule.post_optimization import PostOpt
    from tvm.s_tir.meta_schedule.post_optimization import space as post_opt_space

    original = post_opt_space.Space.run

    def logged_run(self, json_file_list, final_log, *args, **kwargs):
        results = original(self, json_file_list, final_log, *args, **kwargs)
        seconds = []
        for res in results:
            values = [float(x) for x in (res if isinstance(res, list | tuple) else [res])]
            mean = sum(values) / len(values) if values else math.inf
            # Space.run marks candidates that failed to apply with 10000, to run with 1e10.
            seconds.append(mean if mean < 1e3 else None)
        log.write(seconds, time.perf_counter() - log.start)
        return results

    post_opt_space.Space.run = logged_run
    original_ms = post_opt_space.ms
    if builder is not None:
        post_opt_space.ms = _Overrides(
            ms, builder=_Overrides(ms.builder, LocalBuilder=lambda **_settings: builder)
        )
    error, state = None, None
    try:
        state = random.getstate()
        random.seed(seed)  # Space.run draws from the global generator
        with open(os.path.join(work_dir, "post_opt.log"), "a", encoding="utf-8") as f:
            with contextlib.redirect_stdout(f):
                PostOpt(work_dir, target, trials=trials).run()
    except Exception as err:  # the baseline's own failures are results, not crashes
        error = f"{type(err).__name__}: {err}"
        logger.warning("TVM post_optimization failed in %s: %s", work_dir, error)
    finally:
        post_opt_space.Space.run = original
        post_opt_space.ms = original_ms
        if state is not None:
            random.setstate(state)
    return error
