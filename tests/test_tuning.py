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
"""Tuning with TVM's real LocalBuilder and LocalRunner on small workloads.

These tests compile and run every candidate, so they are the slow part of the suite (each
LocalBuilder.build call pays ~30 s of worker start-up here). They check the strategy's guarantees
on real measurements: descent records follow the exploration ones, each descent candidate is one
move away from an earlier record, nothing but the in-batch control (and a challenger's
confirmation) is measured twice, and every tiling is perfect.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.testing import te_workload

import ms_droplet
from ms_droplet._decisions import trace_key
from ms_droplet._records import samples_of

from ._helpers import (
    assert_controls_at_head_and_last,
    assert_only_controls_and_confirmations_repeat,
)
from ._traces import coordinates, num_differences, tile_extents, tile_products_ok

pytestmark = pytest.mark.tuning


@derived_object
class RecordBatches(PyMeasureCallback):
    """Remembers the trace keys of every measured batch, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.traces: list = []  # in measuring order (JSONDatabase sorts its records by latency)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.batches.append([trace_key(c.sch.trace) for c in measure_candidates])
        self.traces.extend(c.sch.trace for c in measure_candidates)


def _tune(mod, target, work_dir, *, trials, per_iter, evo_trials, builder, **settings):
    recorder = RecordBatches()
    db = ms.tune_tir(
        mod,
        target,
        str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=per_iter,
        strategy=ms_droplet.DropletStrategy(
            num_evolutionary_trials=evo_trials,
            evolutionary={"population_size": 64, "genetic_num_iters": 2},
            # one descent: every record after the exploration is one coordinate from an earlier
            # one (exploring again after a convergence is tested with fakes and on the GPU)
            when_converged="stop",
            **settings,
        ),
        builder=builder,
        runner=ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=10),
        ),
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), recorder],
        seed=11,
    )
    return db, recorder


def _check(db, recorder, mod, evo_trials, work_dir, seeded=()):
    """``evo_trials``: explored in this run; ``seeded``: traces in the database before it."""
    records = db.get_all_tuning_records()
    assert len(records) == len(seeded) + sum(len(b) for b in recorder.batches)
    ok = [r for r in records if samples_of(r.run_secs) is not None]
    assert ok, "nothing ran"
    # Descent batches come after the exploration trials.
    seen_trials, descent = 0, []
    for batch in recorder.batches:
        if seen_trials >= evo_trials:
            descent.append(batch)
        seen_trials += len(batch)
    assert descent, "no descent batch was measured"
    earlier = {trace_key(t) for t in seeded}
    earlier |= {k for b in recorder.batches[: len(recorder.batches) - len(descent)] for k in b}
    for batch in descent:
        assert_only_controls_and_confirmations_repeat(batch, earlier)
        earlier.update(batch)
    # Each new descent candidate is one coordinate away from an earlier record.
    extents = tile_extents(records[0].trace)
    assert all(tile_products_ok(rec.trace, extents) for rec in records)
    coords_before = [coordinates(t) for t in seeded]
    keys_before = {trace_key(t) for t in seeded}
    n_desc = 0
    for i, trace in enumerate(recorder.traces):
        key, coords = trace_key(trace), coordinates(trace)
        if i >= evo_trials and key not in keys_before:
            assert 1 in [num_differences(coords, c) for c in coords_before]
            n_desc += 1
        keys_before.add(key)
        coords_before.append(coords)
    assert n_desc >= 3
    # Everything is in the JSON database on disk, readable by stock TVM.
    reopened = ms.database.JSONDatabase(work_dir=str(work_dir))
    assert len(reopened.get_all_tuning_records()) == len(records)
    best = reopened.query_tuning_record(records[0].workload.mod, records[0].target, "main")
    assert best is not None
    assert samples_of(best.run_secs) is not None


def test_matmul_with_local_builder(target, tmp_path, explored_matmul128):
    # TVM's own LocalBuilder (each build() call pays ~30-50 s of worker start-up here) builds one
    # descent batch, continuing the session's explored matmul: its 16 records count toward the
    # 16 exploration trials, so the descent starts at once.
    shutil.copytree(explored_matmul128, tmp_path, dirs_exist_ok=True)
    seeded = [
        r.trace for r in ms.database.JSONDatabase(work_dir=str(tmp_path)).get_all_tuning_records()
    ]
    assert len(seeded) == 16
    mod = te.create_prim_func(te_workload.matmul(128, 128, 128))
    db, rec = _tune(
        mod,
        target,
        tmp_path,
        trials=16,
        per_iter=16,
        evo_trials=16,
        builder=ms.builder.LocalBuilder(timeout_sec=120),
        small_budget_batch=None,  # one batch of 16, not two of 8
    )
    assert len(rec.batches) == 1  # one build() call
    _check(db, rec, mod, 0, tmp_path, seeded=seeded)


def test_conv2d_with_warm_builder(target, tmp_path, warm_builder):
    # with a beam of 4 (the step-1 neighbours of the next 3 fastest records join the start's
    # neighbourhood, ranked by the booster of TVM's XGBModel from 4 records on): every descent
    # candidate is still one coordinate from an earlier record
    mod = te.create_prim_func(te_workload.conv2d_nhwc(1, 14, 14, 16, 16, 3, 1, 1))
    db, rec = _tune(
        mod,
        target,
        tmp_path,
        trials=40,
        per_iter=16,
        evo_trials=8,
        builder=warm_builder,
        beam=4,
        rank_min_records=4,
    )
    _check(db, rec, mod, 8, tmp_path)
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    found = re.search(r"also holds (\d+) step-1 neighbour\(s\) of the 3 next fastest", log)
    assert found and int(found.group(1)) > 0


def _continue_explored_matmul(target, work_dir, builder, explored, *, trials, per_iter):
    """Tune the 128^3 matmul on from the session's 16 explored records (they count toward the
    16 exploration trials, so the descent starts at once), with the default settings otherwise.

    Returns the module, the database, the batch recorder and the strategy.
    """
    shutil.copytree(explored, work_dir, dirs_exist_ok=True)
    mod = te.create_prim_func(te_workload.matmul(128, 128, 128))
    recorder = RecordBatches()
    strategy = ms_droplet.DropletStrategy(
        num_evolutionary_trials=16,
        evolutionary={"population_size": 64, "genetic_num_iters": 2},
    )
    db = ms.tune_tir(
        mod,
        target,
        str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=per_iter,
        strategy=strategy,
        builder=builder,
        runner=ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=5),
        ),
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), recorder],
        seed=11,
    )
    return mod, db, recorder, strategy


def test_final_batch_with_real_runs(target, tmp_path, warm_builder, explored_matmul128):
    # the session's 16 explored trials of a 128^3 matmul and 48 more: an eighth of the 64 is
    # kept for the final batch, two contenders in four rotating rounds, real builds and runs
    mod, db, recorder, strategy = _continue_explored_matmul(
        target, tmp_path, warm_builder, explored_matmul128, trials=48, per_iter=16
    )
    assert sum(len(b) for b in recorder.batches) == 48
    final = recorder.batches[-1]
    a, b = final[:2]
    assert a != b and final == [a, b, b, a, a, b, b, a], final
    earlier = {k for batch in recorder.batches[:-1] for k in batch}
    earlier |= {
        trace_key(r.trace)
        for r in ms.database.JSONDatabase(work_dir=str(explored_matmul128)).get_all_tuning_records()
    }
    assert {a, b} <= earlier, "the final batch measured a new candidate"
    (summary,) = strategy.summaries
    assert summary["final_batch"] is True
    (pick,) = strategy.picks
    assert trace_key(pick.trace) in {a, b}
    assert len(samples_of(pick.run_secs)) == 4 * 3  # its slots in the final batch
    # compile_tir with picked_database builds the pick, and it computes the matmul
    picked = strategy.picked_database(db)
    answer = picked.query_tuning_record(db.get_all_tuning_records()[0].workload.mod, target, "main")
    assert trace_key(answer.trace) == trace_key(pick.trace)
    sch = ms.tir_integration.compile_tir(picked, mod, target)
    assert sch is not None, "compile_tir found no record in picked_database"
    rt_mod = tvm.compile(sch.mod, target=target)
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 128), dtype="float32"), rng.random((128, 128), dtype="float32")
    dev = tvm.cpu()
    z = tvm.runtime.tensor(np.zeros((128, 128), dtype="float32"), dev)
    rt_mod["main"](tvm.runtime.tensor(x, dev), tvm.runtime.tensor(y, dev), z)
    np.testing.assert_allclose(z.numpy(), x @ y, rtol=1e-4, atol=1e-4)


def test_small_budget_descent_with_real_runs(target, tmp_path, warm_builder, explored_matmul128):
    # the session's 16 explored trials of a 128^3 matmul and 24 more in batches of 32 (too few
    # for a final batch): the descent has at most one batch's trials, so it descends in batches
    # of 8, each with a control at its head and in its last slot, with real builds and runs
    seeded = {
        trace_key(r.trace)
        for r in ms.database.JSONDatabase(work_dir=str(explored_matmul128)).get_all_tuning_records()
    }
    _, _, recorder, strategy = _continue_explored_matmul(
        target, tmp_path, warm_builder, explored_matmul128, trials=24, per_iter=32
    )
    sizes = [len(b) for b in recorder.batches]
    assert sizes == [8, 8, 8], sizes
    assert_controls_at_head_and_last(recorder.batches, seeded)
    log = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "Droplet: a small budget (24 trial(s) to descend, at most one batch of 32)" in log
    (summary,) = strategy.summaries
    assert summary["descents"] >= 1 and summary["final_batch"] is False
