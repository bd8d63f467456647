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
"""The log lines of a DropletStrategy task: descent events, timeouts, the final pick."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

from ._decisions import trace_key
from ._records import is_failure, samples_of

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.database import TuningRecord
    from tvm.s_tir.meta_schedule.runner import RunnerResult

    from ._proposals import DescentEvent
    from ._run_state import RunState

__all__ = ["log_event", "log_final_pick", "warn_if_all_timed_out"]


def log_final_pick(run: RunState, incumbent_key: Any, top: list[TuningRecord]) -> bool | None:
    """Say whether the record stock TVM compiles (``top``: the lowest mean) is the incumbent."""
    if not top or is_failure(top[0]):
        return None
    if trace_key(top[0].trace) == incumbent_key:
        run.logger.info("Droplet: the database's best record is the last descent's incumbent")
        return True
    mine = [
        samples_of(r.run_secs)
        for r in run.database.get_top_k(run.workload, 256)
        if trace_key(r.trace) == incumbent_key
    ]
    best_mine = min((sum(x) / len(x) for x in mine if x), default=math.nan)
    secs = samples_of(top[0].run_secs) or [math.nan]
    run.logger.info(
        "Droplet: the database's best record (%.4f ms, what compile_tir picks) is not the last "
        "descent's incumbent (its best record %.4f ms); records of different batches are not "
        "comparable on a noisy machine: re-measure both interleaved (ms-droplet tune does)",
        1e3 * sum(secs) / len(secs),
        1e3 * best_mine,
    )
    return False


def warn_if_all_timed_out(logger: logging.Logger, results: list[RunnerResult]) -> None:
    """One clear warning when every candidate of a batch failed with a build timeout."""
    msgs = [str(r.error_msg or "") for r in results]
    if msgs and all("Timeout" in m or "timeout" in m for m in msgs):
        logger.warning(
            "Droplet: every build of this batch (%d candidates) timed out, so nothing was "
            "measured. On a slow machine TVM's LocalBuilder (30 s by default) can time out "
            "while its workers import TVM; use builder=ms_droplet.WarmBuilder() or "
            "LocalBuilder(timeout_sec=120).",
            len(msgs),
        )


def log_event(logger: logging.Logger, ev: DescentEvent) -> None:
    p = "n/a" if ev.pvalue is None else f"{ev.pvalue:.3g}"
    if ev.kind == "move":
        logger.info(
            "Droplet: move along %s: %.1f%% faster than the incumbent (p=%s, step %d)",
            ev.coordinate,
            100.0 * (1.0 - (ev.ratio or 1.0)),
            p,
            ev.step,
        )
    elif ev.kind == "challenger":
        logger.info(
            "Droplet: %s looks %.1f%% faster (p=%s); re-measuring it beside the incumbent",
            ev.coordinate,
            100.0 * (1.0 - (ev.ratio or 1.0)),
            p,
        )
    elif ev.kind == "inconclusive":
        logger.info(
            "Droplet: %s inconclusive (ratio %.3f, p=%s) %s; re-measuring it once more",
            ev.coordinate,
            ev.ratio or 1.0,
            p,
            ev.message,
        )
    elif ev.kind == "reject":
        ratio = "n/a" if ev.ratio is None else f"{ev.ratio:.3f}"
        logger.info(
            "Droplet: %s not confirmed (ratio %s, p=%s) %s", ev.coordinate, ratio, p, ev.message
        )
    elif ev.kind == "control-failed":
        logger.warning("Droplet: %s", ev.message)
    else:  # widen, converged, scouted, carried
        logger.info("Droplet: %s: %s", ev.kind, ev.message)
