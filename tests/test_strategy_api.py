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
"""The "droplet" kind of SearchStrategy.create, settings checks and the call-order contract."""

from __future__ import annotations

import pytest
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import search_strategy as ss_mod

import ms_droplet
from ms_droplet import DropletStrategy


def _is_droplet(obj) -> bool:
    return isinstance(obj, DropletStrategy)


def test_import_registers_droplet_everywhere():
    assert ms_droplet.is_registered()
    assert _is_droplet(ms.search_strategy.SearchStrategy.create("droplet"))
    assert _is_droplet(ms.search_strategy.create("droplet", pvalue=0.01))
    assert _is_droplet(ss_mod.create("droplet"))
    assert ms.search_strategy.create("droplet", pvalue=0.01).pvalue == 0.01


def test_other_kinds_unchanged_and_unknown_kind_lists_valid_ones():
    assert isinstance(
        ms.search_strategy.create("evolutionary"), ms.search_strategy.EvolutionarySearch
    )
    assert isinstance(ms.search_strategy.create("replay-trace"), ms.search_strategy.ReplayTrace)
    assert isinstance(ms.search_strategy.create("replay-func"), ms.search_strategy.ReplayFunc)
    with pytest.raises(ValueError, match="'droplet'") as err:
        ms.search_strategy.create("dropplet")
    assert "'evolutionary'" in str(err.value)


def test_register_is_idempotent_and_unregister_restores():
    before = ss_mod.SearchStrategy.__dict__["create"]
    ms_droplet.register()
    assert ss_mod.SearchStrategy.__dict__["create"] is before
    try:
        ms_droplet.unregister()
        assert not ms_droplet.is_registered()
        with pytest.raises(ValueError, match="Unknown SearchStrategy"):
            ms.search_strategy.create("droplet")
        assert isinstance(ms.search_strategy.create(), ms.search_strategy.EvolutionarySearch)
        ms_droplet.unregister()  # idempotent
    finally:
        ms_droplet.register()
    assert _is_droplet(ms.search_strategy.create("droplet"))


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"num_evolutionary_trials": -1}, ValueError, "num_evolutionary_trials"),
        ({"num_evolutionary_trials": 2.5}, TypeError, "num_evolutionary_trials"),
        ({"pvalue": 0.0}, ValueError, "pvalue"),
        ({"pvalue": 1.5}, ValueError, "pvalue"),
        ({"pvalue": "0.05"}, TypeError, "pvalue"),
        ({"max_step": 0}, ValueError, "max_step"),
        ({"max_control_failures": 0}, ValueError, "max_control_failures"),
        ({"evolutionary": {"populaton_size": 8}}, TypeError, "populaton_size"),
        ({"p_value": 0.05}, TypeError, "p_value"),
        ({"combine_best": 1}, ValueError, "combine_best"),
        ({"retile": -1}, ValueError, "retile"),
        ({"retile": 2.5}, ValueError, "retile"),
        ({"beam": 1}, ValueError, "beam must be 0"),
        ({"beam": -2}, ValueError, "beam"),
        ({"beam": 2.5}, ValueError, "beam"),
        ({"explore_pool": -1}, ValueError, "explore_pool"),
        ({"explore_pool": 1.5}, ValueError, "explore_pool"),
        ({"descent_batch": 3}, ValueError, "descent_batch"),
        ({"small_budget_batch": 2}, ValueError, "small_budget_batch"),
        ({"small_budget_batch": 8.0}, ValueError, "small_budget_batch"),
        ({"correct_moves": "yes"}, TypeError, "correct_moves"),
        ({"carry_moves": 1}, TypeError, "carry_moves"),
        ({"reconfirm": "yes"}, TypeError, "reconfirm"),
        ({"pool_noise": 1}, TypeError, "pool_noise"),
        ({"valid_locations": "yes"}, TypeError, "valid_locations"),
        ({"confirm": "false"}, TypeError, "confirm must be True or False"),
        ({"rank_neighbours": 0}, TypeError, "rank_neighbours"),
        ({"speculate": None}, TypeError, "speculate"),
        ({"scout_last": "maybe"}, TypeError, "scout_last"),
        ({"stagnation_after_warmup": 1}, TypeError, "stagnation_after_warmup"),
    ],
)
def test_bad_settings_are_rejected_with_their_name(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        DropletStrategy(**kwargs)


def test_settings_are_keyword_only():
    with pytest.raises(TypeError):
        DropletStrategy(300)  # type: ignore[misc]


def test_clone_copies_settings_only():
    s = DropletStrategy(num_evolutionary_trials=7, pvalue=0.2, max_step=2, confirm=False)
    c = s.clone()
    # TVM hands the clone back as its base FFI type; its settings show in a second clone's use.
    assert c is not s
    assert isinstance(c, ms.search_strategy.SearchStrategy)


def test_every_setting_is_carried_to_clones():
    # clone() rebuilds the strategy from _settings(): a setting missing there would be lost
    import inspect

    params = set(inspect.signature(DropletStrategy).parameters)
    settings = DropletStrategy(small_budget_batch=None, correct_moves=False)._settings()
    assert set(settings) == params
    assert settings["small_budget_batch"] is None and settings["correct_moves"] is False


def test_every_setting_is_documented():
    # numpydoc: each keyword of DropletStrategy has its entry in the class docstring
    import inspect

    doc = DropletStrategy.__doc__ or ""
    missing = [
        name
        for name in inspect.signature(DropletStrategy).parameters
        if f"\n    {name} : " not in doc
    ]
    assert not missing, missing


def test_wrong_call_order_is_a_precise_error(matmul64, target):
    s = DropletStrategy(num_evolutionary_trials=4)
    with pytest.raises(RuntimeError, match="before pre_tuning"):
        s.generate_measure_candidates()
    with pytest.raises(RuntimeError, match="not initialized with a TuneContext"):
        s.pre_tuning(8, 4, [], ms.database.MemoryDatabase(), None)
    ctx = ms.TuneContext(
        mod=matmul64,
        target=target,
        space_generator="post-order-apply",
        search_strategy=s,
        rand_state=1,
    )
    spaces = ctx.generate_design_space()
    with pytest.raises(ValueError, match="MemoryDatabase"):
        ctx.pre_tuning(8, 4, spaces, None, ms.cost_model.RandomModel(seed=1))
    db = ms.database.MemoryDatabase()
    ctx.pre_tuning(8, 4, spaces, db, ms.cost_model.RandomModel(seed=1))
    with pytest.raises(RuntimeError, match="already invoked without corresponding post_tuning"):
        ctx.pre_tuning(8, 4, spaces, db, ms.cost_model.RandomModel(seed=1))
    cands = ctx.generate_measure_candidates()
    assert cands is not None and 0 < len(cands) <= 4
    with pytest.raises(ValueError, match="got 0 results for"):
        ctx.notify_runner_results(cands, [])
    ctx.post_tuning()
    with pytest.raises(RuntimeError, match="before pre_tuning"):
        ctx.post_tuning()
