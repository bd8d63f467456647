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
"""The descent's neighbour scores from TVM's real XGBModel while it is still warming up.

``XGBModel.predict`` returns uniform random numbers (numpy's global generator) until the model
holds ``num_warmup_samples`` (100) records, so at a budget of 64 trials a ranking asked of it
would be random; ``cost_model_scores`` asks its trained booster from ``rank_min_records`` on.
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.runner import RunnerResult
from tvm.s_tir.meta_schedule.testing import te_workload

from ms_droplet._cost_model import model_warming, python_side
from ms_droplet._strategy_descent import cost_model_scores


@pytest.fixture(scope="module")
def measured():
    """A tune context, 24 candidates with fake latencies and 24 candidates to score."""
    mod = tvm.IRModule({"main": te.create_prim_func(te_workload.matmul(64, 64, 64))})
    target = tvm.target.Target({"kind": "llvm", "num-cores": 2})
    ctx = ms.TuneContext(
        mod=mod,
        target=target,
        space_generator="post-order-apply",
        search_strategy=ms.search_strategy.ReplayTrace(),
        task_name="matmul64",
        rand_state=3,
        num_threads=1,
    )
    ctx.pre_tuning(max_trials=48, num_trials_per_iter=48, design_spaces=ctx.generate_design_space())
    cands = list(ctx.generate_measure_candidates())
    assert len(cands) == 48
    results = [RunnerResult([1e-4 * (1 + (7 * i) % 24)], None) for i in range(24)]
    return ctx, cands[:24], results, cands[24:]


def _xgb(measured, **kwargs):
    ctx, train, results, _ = measured
    model = ms.cost_model.XGBModel(**kwargs)
    model.update(ctx, train, results)
    return model


def test_a_warming_model_is_not_asked_below_min_records(measured):
    ctx, _, _, rest = measured
    model = _xgb(measured)
    assert model.data_size == 24 and model.num_warmup_samples == 100
    assert model.booster is not None  # trained on every update, only predict() waits
    assert cost_model_scores(model, ctx, rest, min_records=None) is None
    assert cost_model_scores(model, ctx, rest, min_records=32) is None


def test_a_warming_model_scores_with_its_booster_from_min_records(measured):
    ctx, _, _, rest = measured
    model = _xgb(measured)
    first = cost_model_scores(model, ctx, rest, min_records=16)
    assert model.num_warmup_samples == 100  # lowered for the call only
    second = cost_model_scores(model, ctx, rest, min_records=16)
    assert first is not None and len(first) == len(rest)
    assert first == second  # the booster's scores, not random numbers
    assert len(set(first)) > 1
    # the same scores as a model that was told a warm-up of 16 (its own predict() path)
    twin = _xgb(measured, num_warmup_samples=16)
    np.testing.assert_allclose(first, [float(x) for x in twin.predict(ctx, rest)], rtol=1e-6)


def test_a_warm_or_other_model_is_asked_as_it_is(measured):
    ctx, _, _, rest = measured
    warm = _xgb(measured, num_warmup_samples=10)
    scores = cost_model_scores(warm, ctx, rest, min_records=None)
    assert scores == [float(x) for x in warm.predict(ctx, rest)]
    other = ms.cost_model.RandomModel(seed=5)
    scores = cost_model_scores(other, ctx, rest, min_records=16)
    assert scores is not None and len(scores) == len(rest)


def test_model_warming_reads_xgbmodels_warm_up(measured):
    assert model_warming(_xgb(measured))  # 24 of 100 records
    assert not model_warming(_xgb(measured, num_warmup_samples=24))
    assert not model_warming(ms.cost_model.RandomModel(seed=5))
    assert not model_warming(None)


def test_python_side_reads_a_model_that_came_back_from_cpp(measured):
    model = _xgb(measured)
    bare = tvm.runtime.convert([model])[0]  # what pre_tuning receives from the scheduler
    assert not hasattr(bare, "num_warmup_samples")
    assert not model_warming(bare)  # unreadable: the reason python_side exists
    found = python_side(bare)
    assert found is model and model_warming(found)
    assert python_side(model) is model
    assert python_side(None) is None
