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
"""Test Meta Schedule DropletStrategy"""

# pylint: disable=missing-function-docstring

import math
import os
import tempfile

import pytest

import tvm
import tvm.testing
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import DropletStrategy, _droplet_stats
from tvm.s_tir.meta_schedule.testing.dummy_object import (
    DummyBuilder,
    DummyMutator,
    DummyRunner,
)
from tvm.s_tir.schedule import Schedule
from tvm.script import tirx as T

# pylint: disable=missing-class-docstring,invalid-name,no-member,no-self-argument
# fmt: off

@tvm.script.ir_module
class Matmul:
    @T.prim_func(s_tir=True)
    def main(a: T.handle, b: T.handle, c: T.handle) -> None: # type: ignore
        T.func_attr({"global_symbol": "main"})
        A = T.match_buffer(a, (32, 32), "float32")
        B = T.match_buffer(b, (32, 32), "float32")
        C = T.match_buffer(c, (32, 32), "float32")
        for i, j, k in T.grid(32, 32, 32):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    C[vi, vj] = 0.0 # type: ignore
                C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]

# fmt: on
# pylint: enable=missing-class-docstring,invalid-name,no-member,no-self-argument

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})

# (challenger, control, one-sided Welch p-value of "challenger is faster") from scipy.stats
WELCH_CASES = [
    ([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], 0.0009482119867104708),
    ([1.0, 1.2, 1.1, 0.95], [1.05, 1.15, 1.3], 0.15250526036196144),
    ([3.0, 2.0, 2.5, 2.2, 2.4], [1.0, 1.5, 1.2], 0.9942588191793837),
    ([0.5, 0.51], [0.5, 0.52, 0.49, 0.55, 0.5, 0.53], 0.19525731124140183),
]


def _schedule_matmul(sch: Schedule):
    block = sch.get_sblock("matmul")
    i, j, k = sch.get_loops(block=block)
    i_0, i_1, i_2, i_3 = sch.split(i, sch.sample_perfect_tile(i, n=4))
    j_0, j_1, j_2, j_3 = sch.split(j, sch.sample_perfect_tile(j, n=4))
    k_0, k_1 = sch.split(k, sch.sample_perfect_tile(k, n=2))
    sch.reorder(i_0, j_0, i_1, j_1, k_0, i_2, j_2, k_1, i_3, j_3)


def _space_generator() -> ms.space_generator.ScheduleFn:
    return ms.space_generator.ScheduleFn(
        sch_fn=_schedule_matmul,
        sch_rules=[],
        postprocs=[],
        mutator_probs={DummyMutator(): 1.0},
    )


def _tiles(sch: Schedule) -> list:
    trace = sch.trace
    return [
        tuple(int(x) for x in trace.decisions[inst])
        for inst in trace.insts
        if inst.kind.name == "SamplePerfectTile"
    ]


def _latency(tiles: list) -> float:
    """A smooth landscape over all tile factors with a single best tiling."""
    best = [(2, 2, 4, 2), (1, 4, 2, 4), (4, 8)]
    distance = sum(
        abs(math.log2(f / b)) for tile, opt in zip(tiles, best) for f, b in zip(tile, opt)
    )
    return 1e-3 * (1.0 + distance)


def test_droplet_create():
    strategy = ms.search_strategy.SearchStrategy.create("droplet", pvalue=0.01)
    assert isinstance(strategy, DropletStrategy)
    assert isinstance(strategy, ms.search_strategy.SearchStrategy)
    assert strategy.pvalue == 0.01
    assert isinstance(ms.search_strategy.create("droplet"), DropletStrategy)
    context = ms.TuneContext(
        mod=Matmul,
        target=TARGET,
        space_generator=_space_generator(),
        search_strategy="droplet",
        num_threads=1,
    )
    assert isinstance(context.search_strategy, ms.search_strategy.SearchStrategy)
    with pytest.raises(ValueError):
        DropletStrategy(pvalue=0.0)
    with pytest.raises(TypeError):
        DropletStrategy(evolutionary={"no_such_setting": 1})


@pytest.mark.parametrize("use_scipy", [True, False])
def test_droplet_welch_pvalue(monkeypatch, use_scipy):
    if not use_scipy:
        monkeypatch.setattr(_droplet_stats, "_scipy_stats", None)
    elif _droplet_stats._scipy_stats is None:
        return  # scipy is optional; the fallback is checked by the other parametrization
    for challenger, control, pvalue in WELCH_CASES:
        log_a = [math.log(x) for x in challenger]
        log_b = [math.log(x) for x in control]
        assert abs(_droplet_stats._welch_less_pvalue(log_a, log_b) - pvalue) < 1e-6
    faster = _droplet_stats.compare([1.0, 1.01, 0.99], [2.0, 2.02, 1.98])
    assert faster.ratio == pytest.approx(0.5)
    assert faster.significant(0.05)
    assert not _droplet_stats.compare([2.0, 2.02, 1.98], [1.0, 1.01, 0.99]).significant(0.05)
    assert _droplet_stats.compare([1.0], [2.0, 2.1]).pvalue is None


def test_droplet_search_strategy():
    num_trials_per_iter = 8
    max_trials = 64
    num_evolutionary_trials = 16
    context = ms.TuneContext(
        mod=Matmul,
        space_generator=_space_generator(),
        search_strategy=DropletStrategy(
            num_evolutionary_trials=num_evolutionary_trials,
            evolutionary={"population_size": 16, "init_min_unmeasured": 8},
            when_converged="stop",  # one descent: every later batch is a descent batch
            final_trials=0,  # (no final batch of re-measured contenders at the end)
        ),
        target=TARGET,
        num_threads=1,  # because we are using a mutator from the python side
        rand_state=1,
    )
    database = ms.database.MemoryDatabase()
    workload = database.commit_workload(Matmul)
    strategy = context.search_strategy
    strategy.pre_tuning(
        max_trials=max_trials,
        num_trials_per_iter=num_trials_per_iter,
        design_spaces=context.space_generator.generate_design_space(context.mod),
        database=database,
        cost_model=ms.cost_model.RandomModel(seed=1),
    )
    batches = []
    candidates = strategy.generate_measure_candidates()
    while candidates is not None:
        assert 0 < len(candidates) <= num_trials_per_iter
        batches.append([_tiles(c.sch) for c in candidates])
        results = []
        for candidate, tiles in zip(candidates, batches[-1]):
            base = _latency(tiles)
            run_secs = [base, base * 1.01, base * 0.99]
            results.append(ms.runner.RunnerResult(run_secs=run_secs, error_msg=None))
            database.commit_tuning_record(
                ms.database.TuningRecord(
                    trace=candidate.sch.trace,
                    workload=workload,
                    run_secs=run_secs,
                    target=context.target,
                    args_info=candidate.args_info,
                )
            )
        strategy.notify_runner_results(candidates, results)
        candidates = strategy.generate_measure_candidates()
    strategy.post_tuning()

    assert sum(len(b) for b in batches) <= max_trials
    seen, best_explored, descent = 0, math.inf, []
    for batch in batches:
        if seen < num_evolutionary_trials:
            best_explored = min([best_explored] + [_latency(t) for t in batch])
        else:
            descent.append(batch)
        seen += len(batch)
    assert len(descent) >= 2
    for batch in batches:  # tile moves keep every tiling perfect
        for tiles in batch:
            assert [math.prod(t) for t in tiles] == [32, 32, 32]
    for batch in descent:  # the control first and spread, then moves along one coordinate
        control = batch[0]
        for tiles in batch[1:]:
            # a repeated control, a neighbour of the incumbent, or a neighbour of a challenger
            # measured beside its confirmation
            assert sum(a != b for a, b in zip(tiles, control)) in (0, 1, 2)
        assert sum(sum(a != b for a, b in zip(t, control)) == 1 for t in batch) >= 1
    best_final = min(_latency(t) for batch in batches for t in batch)
    assert best_final < best_explored


def test_droplet_tune_tir():
    with tempfile.TemporaryDirectory() as work_dir:
        database = ms.tune_tir(
            mod=Matmul,
            target=TARGET,
            work_dir=work_dir,
            max_trials_global=24,
            num_trials_per_iter=8,
            builder=DummyBuilder(),
            runner=DummyRunner(),
            cost_model="random",
            measure_callbacks=[ms.measure_callback.AddToDatabase()],
            strategy=DropletStrategy(
                num_evolutionary_trials=8,
                evolutionary={"population_size": 16, "init_min_unmeasured": 8},
            ),
            num_tuning_cores=1,
            seed=1,
        )
        records = database.get_all_tuning_records()
        assert 8 < len(records) <= 24
        assert all(len(record.run_secs) > 0 for record in records)
        logs = ""
        for name in os.listdir(os.path.join(work_dir, "logs")):
            with open(os.path.join(work_dir, "logs", name), encoding="utf-8") as log_file:
                logs += log_file.read()
        assert "Droplet: exploring with EvolutionarySearch for 8 trial(s)" in logs
        assert "from the best record not descended from yet" in logs


if __name__ == "__main__":
    tvm.testing.main()
