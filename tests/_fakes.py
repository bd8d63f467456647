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
"""Fakes for fast, deterministic tests of the strategy inside TVM's real task scheduler.

``HashBuilder`` "builds" a candidate into the structural hash of its module and ``LandscapeRunner``
turns that hash into run seconds from a fixed landscape: the same module always gets the same
latency (plus seeded noise), so two tunings fed the same measurements must propose the same
candidates. They stand in for TVM's ``DummyBuilder`` / ``DummyRunner`` (whose latencies come
from the unseeded global ``random``). Real builds and runs are tested in test_tuning.py.
"""

from __future__ import annotations

import hashlib
import os
import random

import tvm_ffi
from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.runner import (
    PyRunner,
    PyRunnerFuture,
    RunnerFuture,
    RunnerInput,
    RunnerResult,
)

_PREFIX = "fake-artifact:"


@derived_object
class HashBuilder(PyBuilder):
    """Builds nothing: the artifact path carries the module's structural hash.

    With ``artifact_root`` each artifact path lies in a folder of its own under it (created
    empty), so that TVM's ``RemoveBuildArtifact`` callback, which removes that folder, works.
    """

    def __init__(
        self,
        *,
        fail_fraction: float = 0.0,
        error: str = "fake build error",
        artifact_root: str | None = None,
    ) -> None:
        super().__init__()
        self.fail_fraction = fail_fraction
        self.error = error
        self.artifact_root = artifact_root
        self.calls = 0
        self.artifacts = 0

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        self.calls += 1
        out = []
        for inp in build_inputs:
            h = tvm_ffi.structural_hash(inp.mod)
            if _unit(h, "build") < self.fail_fraction:
                out.append(BuilderResult(None, self.error))
            else:
                out.append(BuilderResult(self._path(h), None))
        return out

    def _path(self, h: int) -> str:
        if self.artifact_root is None:
            return f"{_PREFIX}{h}"
        self.artifacts += 1
        folder = os.path.join(self.artifact_root, str(self.artifacts))
        os.makedirs(folder, exist_ok=True)
        return os.path.join(folder, f"{_PREFIX}{h}")


@derived_object
class _Future(PyRunnerFuture):
    def __init__(self, result: RunnerResult) -> None:
        super().__init__()
        self._result = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self._result


@derived_object
class LandscapeRunner(PyRunner):
    """Run seconds from a fixed pseudo-random landscape over module hashes.

    Parameters
    ----------
    repeat : int
        Samples per candidate.
    noise : float
        Relative noise of each sample (seeded by the module hash and its measurement count).
    fail_fraction : float
        Fraction of modules whose run fails, chosen by hash.
    """

    def __init__(self, *, repeat: int = 3, noise: float = 0.02, fail_fraction: float = 0.0):
        super().__init__()
        self.repeat = repeat
        self.noise = noise
        self.fail_fraction = fail_fraction
        self.counts: dict[int, int] = {}
        self.batches: list[list[int]] = []

    def run(self, runner_inputs: list[RunnerInput]) -> list[RunnerFuture]:
        futures = []
        self.batches.append([])
        for inp in runner_inputs:
            h = int(str(inp.artifact_path).rsplit(_PREFIX, 1)[1])
            self.batches[-1].append(h)
            nth = self.counts.get(h, 0)
            self.counts[h] = nth + 1
            if self.fails(h):
                res = RunnerResult(None, "fake run error")
            else:
                res = RunnerResult(self.samples(h, nth), None)
            futures.append(_Future(res))
        return futures

    def fails(self, h: int) -> bool:
        """Whether the run of the module with hash ``h`` fails."""
        return _unit(h, "run") < self.fail_fraction

    def true_secs(self, h: int) -> float:
        """The noise-free run seconds of the module with hash ``h``."""
        return 1e-3 * (1.0 + 4.0 * _unit(h, "latency"))

    def samples(self, h: int, nth: int) -> list[float]:
        """The run seconds of the ``nth`` measurement (0 first) of the module with hash ``h``."""
        base = self.true_secs(h)
        rng = random.Random(f"{h}:{nth}")
        secs = [base * (1.0 + self.noise * rng.gauss(0, 1)) for _ in range(self.repeat)]
        return [max(s, 1e-6) for s in secs]


def _unit(h: int, salt: str) -> float:
    digest = hashlib.sha256(f"{salt}:{h}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
