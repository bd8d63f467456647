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
"""A measure callback that keeps every trial in order, for the tune report and the bench curves.

Each trial's latency is :func:`~ms_droplet._records.latency` of its runner result (the mean of its
run seconds; None for a failure), so trials and database records share one statistic.
"""

from __future__ import annotations

import json
import time

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from ._files import append_lines
from ._records import latency

__all__ = ["TrialLog"]


@derived_object
class TrialLog(PyMeasureCallback):
    """A measure callback that keeps every trial in order: trace, latency, wall time.

    Parameters
    ----------
    path : str, optional
        Also append one JSON line per trial, ``{"ms": latency in ms or null, "wall_s": seconds}``,
        to this file as the trials arrive (what ``ms-droplet bench`` resumes and plots from).
    wall_offset : float
        Seconds added to every wall time (the time a resumed run had already spent).
    """

    def __init__(self, path: str | None = None, *, wall_offset: float = 0.0) -> None:
        super().__init__()
        self.path = path
        self.start = time.perf_counter() - wall_offset
        self.traces: list = []
        self.seconds: list[float | None] = []
        self.wall: list[float] = []
        self.build_errors = 0
        self.timeouts = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        now = time.perf_counter() - self.start
        for cand, built, res in zip(
            measure_candidates, builder_results, runner_results, strict=True
        ):
            self.traces.append(cand.sch.trace)
            self.seconds.append(latency(res.run_secs) if res.error_msg is None else None)
            self.wall.append(now)
            if built.error_msg is not None:
                self.build_errors += 1
                if "timeout" in str(built.error_msg).lower():
                    self.timeouts += 1
        if self.path is not None and measure_candidates:
            self.write(self.seconds[-len(measure_candidates) :], now)

    def write(self, seconds: list[float | None], wall: float) -> None:
        """Append trials to :attr:`path` (one JSON line each) and flush them to disk.

        A cut-off last line left in the file by a crash is moved aside first, so that the new
        lines never merge with it (see :func:`~ms_droplet._files.append_lines`).
        """
        if self.path is None or not seconds:
            return
        append_lines(
            self.path,
            [json.dumps({"ms": None if s is None else s * 1e3, "wall_s": wall}) for s in seconds],
        )

    def best_index(self, upto: int | None = None) -> int | None:
        """Index of the fastest recorded trial among the first ``upto``."""
        items = [(s, i) for i, s in enumerate(self.seconds[:upto]) if s is not None]
        return min(items)[1] if items else None

    def curve(self) -> list[dict[str, float | None]]:
        """Best-so-far latency by trial and by second (``best_ms`` None before a success)."""
        out: list[dict[str, float | None]] = []
        best: float | None = None
        for i, (s, w) in enumerate(zip(self.seconds, self.wall, strict=True)):
            if s is not None:
                best = s if best is None else min(best, s)
            out.append(
                {"trial": i + 1, "wall_s": w, "best_ms": None if best is None else best * 1e3}
            )
        return out
