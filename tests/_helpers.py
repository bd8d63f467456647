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
"""Helpers shared by several test files (not tests themselves)."""

from __future__ import annotations

import contextlib
import io

import pytest

#: A real tiny bench: every strategy on a 32^3 matmul, 8 trials (16 for evolutionary).
WORKLOAD = "matmul:32,32,32"
BENCH_ARGS = [
    "bench",
    "--workload",
    WORKLOAD,
    "--trials",
    "8",
    "--num-evolutionary-trials",
    "4",
    "--ratio",
    "2",
    "--num-trials-per-iter",
    "4",
    "--rounds",
    "2",
    "--min-repeat-ms",
    "5",
    "--no-progress",
]


def use_builder_for_warm(mp: pytest.MonkeyPatch, builder) -> None:
    """Make ``--builder warm`` of the command line use ``builder`` (not shut down by it).

    The command line makes its builder with ``_factories.make_builder`` (``_tune`` imports it);
    ``"local"`` and builder objects go to the real factory.
    """
    from ms_droplet import _factories, _tune

    real = _factories.make_builder

    def make_builder(kind, timeout_sec, **kwargs):
        if kind == "warm":
            return builder, False
        return real(kind, timeout_sec, **kwargs)

    mp.setattr(_factories, "make_builder", make_builder)
    mp.setattr(_tune, "make_builder", make_builder)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``ms-droplet ARGV`` in this process: (exit code, stdout, stderr)."""
    from ms_droplet import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def make_db(work_dir, n=5):
    """A JSON database in ``work_dir`` with ``n`` records of one matmul; its record file."""
    from tvm.s_tir import Schedule
    from tvm.s_tir import meta_schedule as ms

    from ms_droplet._workloads import load_workload

    from .conftest import host_target

    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    mod = load_workload("matmul:16,16,16")
    wl = db.commit_workload(mod)
    for i in range(n):
        sch = Schedule(mod)
        db.commit_tuning_record(
            ms.database.TuningRecord(sch.trace, wl, [1e-3 * (i + 1)], host_target())
        )
    return work_dir / "database_tuning_record.json"


def tune_for_resume(work_dir: str, batches_file: str, slow: float) -> None:
    """The tuning of ``test_resume``: fake builder and runner, every batch journaled to a file.

    ``slow`` seconds of sleep after each batch give the test time to kill the process
    mid-descent. Runs in a subprocess (the one that is killed) or in the test's process.
    """
    import json
    import time

    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    import ms_droplet
    from ms_droplet._decisions import trace_key
    from ms_droplet._workloads import load_workload

    from ._fakes import HashBuilder, LandscapeRunner
    from .conftest import host_target

    @derived_object
    class Journal(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, cands, builder_results, runner_results):
            with open(batches_file, "a", encoding="utf-8") as f:
                f.write(json.dumps([trace_key(c.sch.trace) for c in cands]) + "\n")
            time.sleep(slow)

    ms.tune_tir(
        load_workload("matmul:64,64,64"),
        host_target(),
        work_dir,
        max_trials_global=400,
        num_trials_per_iter=16,
        strategy=ms_droplet.DropletStrategy(
            num_evolutionary_trials=16,
            max_step=2,
            evolutionary={"population_size": 64, "genetic_num_iters": 2},
        ),
        builder=HashBuilder(),
        runner=LandscapeRunner(),
        cost_model=ms.cost_model.RandomModel(seed=1),
        measure_callbacks=[ms.measure_callback.AddToDatabase(), Journal()],
        seed=1,
        num_tuning_cores=1,
    )


def assert_only_controls_and_confirmations_repeat(
    batch: list, earlier: set, *, max_challengers: int = 2
) -> None:
    """The descent's re-measurement rule for one batch of keys, in measuring order.

    The incumbent (first in its batch) may repeat as often as it is a control; besides it only
    confirmations are measured again: at most ``max_challengers`` earlier keys, two slots each.
    A batch of the exploration (all new, all distinct) passes too.
    """
    control = batch[0]
    again = [k for k in batch if k in earlier and k != control]
    assert len(set(again)) <= max_challengers, "a neighbour was measured again"
    for k in set(batch) - {control}:
        n = batch.count(k)
        assert n == 1 or (n == 2 and k in earlier), "a candidate was measured twice in a batch"


def assert_controls_at_head_and_last(batches: list[list], earlier: set) -> None:
    """The small-budget layout (controls at the head and last, immediate moves) over batches.

    Each batch opens and (from three slots on) closes with an earlier kernel, the incumbent as
    its control, holds nothing else twice (no confirmation) and measures no other earlier
    kernel. ``earlier`` grows with each batch.
    """
    for batch in batches:
        control = batch[0]
        assert control in earlier, "each batch opens with the incumbent as its control"
        if len(batch) >= 3:
            assert batch[-1] == control, f"the last slot is not the control: {batch}"
        inner = batch[1:-1] if len(batch) >= 3 else batch[1:]
        assert len(set(inner)) == len(inner), f"a kernel twice in a batch: {batch}"
        assert control not in inner, f"the control inside the batch: {batch}"
        assert not set(inner) & earlier, "only the controls are re-measured"
        earlier.update(batch)
