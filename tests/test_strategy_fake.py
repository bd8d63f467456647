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
"""DropletStrategy inside TVM's real task scheduler, with a deterministic fake builder/runner.

The fakes make latencies a fixed function of the module, so these tests can check the algorithm's
bookkeeping exactly (batch sizes, budget, no re-measurement, reproducibility, faults) in seconds.
The same paths are exercised with real builds and runs in test_tuning.py.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter

import pytest
import tvm
import tvm_ffi
from tvm import te
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.testing import te_workload

import ms_droplet
from ms_droplet._candidates import CandidateCache
from ms_droplet._decisions import Change, apply_change, moves, trace_key
from ms_droplet._records import samples_of, scheduled_module

from ._fakes import HashBuilder, LandscapeRunner
from ._helpers import assert_controls_at_head_and_last
from ._traces import coordinates, num_differences, tile_extents, tile_products_ok

EVO = {"population_size": 64, "init_min_unmeasured": 16, "genetic_num_iters": 2}


def _tune(
    mod,
    target,
    work_dir,
    *,
    seed=7,
    trials=96,
    per_iter=16,
    evo_trials=16,
    runner=None,
    builder=None,
    strategies=None,
    database=None,
    cost_model=None,
    **kwargs,
):
    runner = runner or LandscapeRunner()
    strategy = ms_droplet.DropletStrategy(
        num_evolutionary_trials=evo_trials, evolutionary=EVO, **kwargs
    )
    if strategies is not None:
        strategies.append(strategy)
    db = ms.tune_tir(
        mod,
        target,
        str(work_dir),
        max_trials_global=trials,
        num_trials_per_iter=per_iter,
        strategy=strategy,
        builder=builder or HashBuilder(),
        runner=runner,
        cost_model=cost_model or ms.cost_model.RandomModel(seed=seed),
        database=database if database is not None else ms.database.MemoryDatabase(),
        measure_callbacks=[
            ms.measure_callback.AddToDatabase(),
            ms.measure_callback.UpdateCostModel(),
        ],
        seed=seed,
        # TVM's EvolutionarySearch draws from per-thread random states in a dynamic thread pool,
        # so only a single tuning thread makes the exploration phase reproducible.
        num_tuning_cores=1,
    )
    return db, runner


def _log(work_dir) -> str:
    """The task logs of a tuning's work dir, concatenated."""
    return "".join(p.read_text() for p in (work_dir / "logs").glob("*.log"))


def _tune_until(mod, target, tmp_path, want, *, seeds=(7, 11, 13, 17), **kwargs):
    """The first of ``seeds`` whose tuning shows the scenario a test needs.

    Some tests check what follows an event (a move, a descent's incumbent in the final batch);
    whether the event happens depends on TVM's exploration, which differs between TVM versions
    (0.26 and 0.27 explore other candidates from the same seed). ``want(log)`` says whether a
    tuning's task log has it. Returns ``(log, db, runner, strategy)`` of that tuning.
    """
    for seed in seeds:
        work = tmp_path / f"seed{seed}"
        strategies: list = []
        db, runner = _tune(mod, target, work, seed=seed, strategies=strategies, **kwargs)
        log = _log(work)
        if want(log):
            return log, db, runner, strategies[0]
    pytest.fail(f"no tuning of seeds {seeds} showed the scenario this test needs")


def _descent_batches(runner, evo_trials):
    seen, out = 0, []
    for batch in runner.batches:
        if seen >= evo_trials:
            out.append(batch)
        seen += len(batch)
    return out


def test_descent_bookkeeping(matmul64, target, tmp_path):
    # (the final batch, which re-measures a few kernels, is tested below)
    db, runner = _tune(matmul64, target, tmp_path, trials=160, final_trials=0)
    sizes = [len(b) for b in runner.batches]
    assert all(s <= 16 for s in sizes), sizes
    assert sum(sizes) <= 160
    descent = _descent_batches(runner, 16)
    assert len(descent) >= 2, "the descent never ran"
    earlier: set[int] = {h for b in runner.batches[: len(runner.batches) - len(descent)] for h in b}
    controls_seen = 0
    for batch in descent:
        counts = Counter(batch)
        control, n_control = counts.most_common(1)[0]
        if n_control > 1:
            controls_seen += 1
            # the control heads the batch (warm-up and first control) and recurs every 8 slots
            assert batch[0] == control
            if len(batch) == 16:
                assert batch[1] == batch[-1] == control
            assert n_control >= 1 + len(batch) // 8
        # Only the incumbent (the controls) and confirmations (two slots) repeat in a batch ...
        again_in_batch = [h for h, n in counts.items() if h != control and n > 1]
        assert all(counts[h] == 2 and h in earlier for h in again_in_batch), "a new one twice"
        # ... and besides it only confirmations (at most max_challengers=2) were measured before.
        again = [h for h in set(batch) if h in earlier and h != control]
        assert len(again) <= 2, f"{len(again)} candidates measured again"
        earlier.update(batch)
    assert controls_seen >= 2, "no batch carried spread controls"
    records = db.get_all_tuning_records()
    extents = tile_extents(records[0].trace)
    assert all(tile_products_ok(r.trace, extents) for r in records)


def test_descent_candidates_differ_in_one_coordinate(matmul64, target, tmp_path):
    # one descent only (no exploration slice after it converges): every record after the
    # exploration is one coordinate from an earlier one (the incumbent, or a challenger whose
    # neighbours were measured speculatively)
    db, _ = _tune(matmul64, target, tmp_path, trials=96, when_converged="stop")
    records = db.get_all_tuning_records()
    assert len(records) > 16
    keys_before = set()
    coords_before = []
    checked = 0
    for i, rec in enumerate(records):
        key = trace_key(rec.trace)
        coords = coordinates(rec.trace)
        if i >= 16 and key not in keys_before:
            diffs = [num_differences(coords, c) for c in coords_before]
            assert 1 in diffs, f"descent record {i} is not one move away from an earlier record"
            checked += 1
        keys_before.add(key)
        coords_before.append(coords)
    assert checked >= 10


def test_pairs_of_moves_extend_a_converged_descent(matmul64, target, tmp_path):
    # Same seed, same measurements: the run with pairs repeats the run without them until the
    # neighbourhood is exhausted, then measures pairs of moves before it converges (no final
    # batch: it would follow the last descent batch in both runs).
    settings = dict(trials=5000, per_iter=64, max_step=1, when_converged="stop", final_trials=0)
    db0, _ = _tune(matmul64, target, tmp_path / "a", combine_best=0, **settings)
    db2, _ = _tune(matmul64, target, tmp_path / "b", combine_best=8, **settings)
    keys0 = [trace_key(r.trace) for r in db0.get_all_tuning_records()]
    recs2 = db2.get_all_tuning_records()
    assert [trace_key(r.trace) for r in recs2[: len(keys0)]] == keys0
    assert len(recs2) > len(keys0), "no pair was measured"
    earlier = {trace_key(r.trace): coordinates(r.trace) for r in recs2[: len(keys0)]}
    pairs = 0
    for rec in recs2[len(keys0) :]:
        key, coords = trace_key(rec.trace), coordinates(rec.trace)
        if key in earlier:
            continue  # a control or a confirmation
        diffs = [num_differences(coords, c) for c in earlier.values()]
        if 2 in diffs and diffs.count(1) >= 2:  # two moves of one incumbent, applied together
            pairs += 1
        earlier[key] = coords
    assert pairs >= 2


def _replayed_pick(strategy, mod, target):
    """A fresh ``CandidateCache`` of ``mod`` and the strategy's pick replayed in it."""
    (pick,) = strategy.picks
    ctx = ms.TuneContext(mod=mod, target=target, space_generator="post-order-apply")
    cache = CandidateCache(ctx.mod, list(ctx.space_generator.postprocs), 1)
    return cache, cache.replay(pick.trace)


def _moved_module(cache, trace, index, value) -> int | None:
    """The structural hash of ``trace`` with decision ``index`` set to ``value`` (replayed)."""
    sch = cache.replay(apply_change(trace, Change(index, value)))
    return None if sch is None else tvm_ffi.structural_hash(sch.mod)


def _unmeasured_neighbours(db, strategy, mod, target, max_step):
    """The valid neighbours (steps 1..max_step) of the strategy's pick not in ``db``."""
    cache, start = _replayed_pick(strategy, mod, target)
    cache.claim(start)
    measured = {trace_key(r.trace) for r in db.get_all_tuning_records()}
    hashes = {_module_hash(mod, r.trace) for r in db.get_all_tuning_records()}
    locations = cache.compute_locations(start.trace) if strategy.valid_locations else None
    missing, valid = [], 0
    for step in range(1, max_step + 1):
        far = locations is not None and step == max_step
        for mv in moves(start.trace, step, max_parallel_extent=32, locations=locations, far=far):
            built = cache.candidate(mv.trace)
            if built is None:
                continue
            valid += 1
            if built[0] not in measured and tvm_ffi.structural_hash(built[1].mod) not in hashes:
                missing.append(mv.label)
    return missing, valid


@pytest.mark.parametrize("retile", [0, 4])
def test_a_converged_descent_measured_its_incumbents_whole_neighbourhood(
    matmul64, target, tmp_path, retile
):
    # "Converged: no unmeasured neighbour" must be true of the last incumbent, also after moves
    # whose speculative batches built part of its neighbourhood before it was the incumbent.
    log, db, _, strategy = _tune_until(
        matmul64,
        target,
        tmp_path,
        lambda log: "Droplet: move along" in log,
        trials=5000,
        per_iter=16,
        max_step=2,
        when_converged="stop",
        final_trials=0,
        retile=retile,
    )
    assert "converged: no unmeasured neighbour up to step 2" in log
    missing, valid = _unmeasured_neighbours(db, strategy, matmul64, target, 2)
    assert valid >= 10
    assert not missing, f"{len(missing)} of {valid} neighbours never measured: {missing[:5]}"
    # A step move changes two factors of one tiling; a retiling may change three or four: count
    # the descent's records that are a retiling of an earlier record and no step from any.
    records = db.get_all_tuning_records()
    coords = [coordinates(r.trace) for r in records]

    def changed_factors(a, b):
        if a.keys() != b.keys():
            return None  # another sketch
        diff = [k for k in a if a[k] != b[k]]
        if len(diff) != 1:
            return None
        x, y = a[diff[0]], b[diff[0]]
        return sum(u != v for u, v in zip(x, y, strict=True)) if isinstance(x, tuple) else 1

    retiled = 0
    for i in range(16, len(records)):  # the descent's records
        changed = [changed_factors(coords[i], c) for c in coords[:i]]
        if any(n is not None and n > 2 for n in changed) and not any(
            n is not None and n <= 2 for n in changed
        ):
            retiled += 1
    assert (retiled > 0) == (retile > 0), retiled


@pytest.mark.parametrize("valid_locations", [True, False])
def test_a_converged_descent_tried_every_valid_compute_location(target, tmp_path, valid_locations):
    # with max_step=1 a converged descent measured its incumbent's whole neighbourhood: with
    # valid_locations every valid compute location (inline, root, each loop where compute-at
    # is valid) is one move away; without, only the decision indices one away that are valid
    conv = tvm.IRModule(
        {"main": te.create_prim_func(te_workload.conv2d_nhwc(1, 14, 14, 16, 16, 3, 1, 1))}
    )
    strategies: list = []
    db, _ = _tune(
        conv,
        target,
        tmp_path,
        trials=5000,
        per_iter=16,
        max_step=1,
        when_converged="stop",
        final_trials=0,
        valid_locations=valid_locations,
        strategies=strategies,
    )
    missing, _ = _unmeasured_neighbours(db, strategies[0], conv, target, 1)
    assert not missing, missing
    cache, start = _replayed_pick(strategies[0], conv, target)
    locations = cache.compute_locations(start.trace)
    assert locations, "no compute location in the conv's pick"
    base = coordinates(start.trace)
    around = [c for c in map(coordinates, (r.trace for r in db.get_all_tuning_records()))]
    hashes = {_module_hash(conv, r.trace) for r in db.get_all_tuning_records()}
    for k, valid in locations.items():
        key = ("decision", k)
        tried = {c[key] for c in around if num_differences(base, c) == 1 and c[key] != base[key]}
        others = set(valid) - {base[key]}
        if valid_locations:
            # a location whose kernel was measured as another trace (an explored one) is not
            # measured again: it counts as tried
            same = {v for v in others - tried if _moved_module(cache, start.trace, k, v) in hashes}
            assert tried | same == others, (tried, same, valid)
        else:
            assert tried <= {base[key] - 1, base[key] + 1}, (tried, valid)
            assert len(others) > 2  # so the check above says something


def test_same_seed_same_candidates_other_seed_differs(matmul64, target, tmp_path):
    _, r1 = _tune(matmul64, target, tmp_path / "a", seed=3, trials=64)
    _, r2 = _tune(matmul64, target, tmp_path / "b", seed=3, trials=64)
    _, r3 = _tune(matmul64, target, tmp_path / "c", seed=4, trials=64)
    assert r1.batches == r2.batches
    assert r1.batches != r3.batches


def test_converged_task_ends_before_the_budget(matmul64, target, tmp_path):
    db, runner = _tune(
        matmul64, target, tmp_path, trials=5000, per_iter=64, max_step=1, when_converged="stop"
    )
    measured = sum(len(b) for b in runner.batches)
    assert measured < 5000, "the descent never converged, so the task never ended"
    assert len(db.get_all_tuning_records()) == measured


def test_converged_descent_explores_again_and_spends_the_budget(matmul64, target, tmp_path):
    # the same settings that converge early above, with the default when_converged="explore"
    db, runner = _tune(matmul64, target, tmp_path, trials=400, per_iter=32, max_step=1)
    measured = sum(len(b) for b in runner.batches)
    assert measured == 400, "budget left unused"
    assert len(db.get_all_tuning_records()) == measured
    log = _log(tmp_path)
    assert log.count("Droplet: descent converged with") >= 1
    starts = log.count("from the best record not descended from yet")
    assert starts >= 2, "no second descent after the exploration slice"
    # the final batch names each earlier descent's incumbent by its descent's number
    line = next(x for x in log.splitlines() if "Droplet: final batch: " in x)
    labels = re.findall(r"incumbent of descent (\d+)", line)
    assert "earlier incumbent" not in line and labels, line
    started = {int(n) for n in re.findall(r"Droplet: descent (\d+) starts", log)}
    assert {int(n) for n in labels} <= started, (line, started)
    # pool_noise (the default): a later descent's tests borrow the earlier descents' slot noise
    prior = re.search(r"slot noise of the task's (\d+) earlier descent batches: ([0-9.]+) %", log)
    assert prior is not None and int(prior.group(1)) >= 3, log
    # An exploration slice measures no kernel measured before: TVM's EvolutionarySearch seeds
    # each new run with the database's best records and proposes some of them again.
    measured = [h for b in runner.batches for h in b]
    slices = re.findall(r"descent converged with (\d+) trial\(s\) left; exploring (\d+) more", log)
    assert slices
    for left, n in slices:
        begin = 400 - int(left)
        again = set(measured[begin : begin + int(n)]) & set(measured[:begin])
        assert not again, f"an exploration slice measured {len(again)} kernel(s) again"


def _switch_after(work_dir) -> int:
    log = _log(work_dir)
    found = re.findall(r"switching to the descent after (\d+) of", log)
    assert len(found) == 1, log
    return int(found[0])


# Two tunings of 128 fake trials with a real XGBModel (the slowest test without real runs): slow.
@pytest.mark.tuning
def test_stagnation_counts_only_after_the_cost_models_warm_up(matmul64, target, tmp_path):
    # stagnation_trials=1: the first explored batch whose last trial gains nothing ends the
    # exploration, unless that batch arrived while the cost model was warming up.
    def model():
        return ms.cost_model.XGBModel(num_warmup_samples=40)

    settings = {"trials": 128, "evo_trials": 96, "stagnation_trials": 1, "final_trials": 0}
    _tune(matmul64, target, tmp_path / "a", cost_model=model(), **settings)
    early = _switch_after(tmp_path / "a")
    _tune(
        matmul64,
        target,
        tmp_path / "b",
        cost_model=model(),
        stagnation_after_warmup=True,
        **settings,
    )
    late = _switch_after(tmp_path / "b")
    assert early < 48
    # batches starting at 0, 16 and 32 (< 40 records) do not count: at 48 records it can
    assert late >= 64
    assert late % 16 == 0


def test_failing_runs_are_not_latencies(matmul64, target, tmp_path):
    runner = LandscapeRunner(fail_fraction=0.3)
    # one descent (no exploration slice after it converges, no final batch): every batch after
    # the first 16 trials is a descent batch
    db, runner = _tune(
        matmul64,
        target,
        tmp_path,
        runner=runner,
        trials=96,
        when_converged="stop",
        final_trials=0,
    )
    records = db.get_all_tuning_records()
    assert len(records) == sum(len(b) for b in runner.batches)
    failed = [r for r in records if samples_of(r.run_secs) is None]
    assert failed, "the fake runner should have failed some candidates"
    descent = _descent_batches(runner, 16)
    assert len(descent) >= 1
    # Failed records are stored as failures (never a sentinel read as a latency)...
    measured = [h for b in runner.batches for h in b]
    assert len(failed) == sum(1 for h in measured if runner.fails(h))
    # ...the descent starts from the fastest exploration record that did run...
    explored = [h for b in runner.batches[: len(runner.batches) - len(descent)] for h in b]
    ran = [h for h in explored if not runner.fails(h)]
    best = min(ran, key=lambda h: sum(runner.samples(h, 0)) / len(runner.samples(h, 0)))
    assert descent[0][0] == best, "the descent did not start from the best successful record"
    # ...and a failed candidate never becomes the incumbent (the in-batch control, first) nor a
    # challenger confirmed by re-measuring it (second, measured before).
    earlier = set(explored)
    for batch in descent:
        assert not runner.fails(batch[0]), "a failed candidate became the incumbent"
        if len(batch) > 1 and batch[1] in earlier:
            assert not runner.fails(batch[1]), "a failed candidate was taken for a challenger"
        earlier.update(batch)


def test_everything_fails_ends_the_task(matmul64, target, tmp_path):
    builder = HashBuilder(fail_fraction=1.0)
    runner = LandscapeRunner()
    db, _ = _tune(matmul64, target, tmp_path, runner=runner, builder=builder, trials=200)
    records = db.get_all_tuning_records()
    assert 0 < len(records) <= 16, "with no successful record there is nothing to descend from"
    assert all(samples_of(r.run_secs) is None for r in records)


def test_multi_task_module(target, tmp_path):
    mm = te.create_prim_func(te_workload.matmul(32, 32, 32))
    a = te.placeholder((64, 64), name="A")
    b = te.compute((64, 64), lambda i, j: a[i, j] * 2.0, name="B")
    scale = te.create_prim_func([a, b])
    mod = tvm.IRModule(
        {
            "matmul": mm.with_attr("global_symbol", "matmul"),
            "scale": scale.with_attr("global_symbol", "scale"),
        }
    )
    db, runner = _tune(mod, target, tmp_path, trials=64, evo_trials=8)
    records = db.get_all_tuning_records()
    workloads = {str(r.workload.mod.get_global_vars()[0]) for r in records}
    assert len({tvm.ir.save_json(r.workload.mod) for r in records}) == 2, workloads
    # TVM cloned the strategy per task: each task explored on its own, and the two share the
    # global budget (a task that runs out of candidates leaves its budget to the other).
    per_task: dict[str, int] = {}
    # Each task's workload is its function alone as "main" (TVM's _normalize_mod), which keeps
    # the function's global_symbol: the task's name.
    symbols: dict[str, set[str]] = {}
    for r in records:
        key = tvm.ir.save_json(r.workload.mod)
        per_task[key] = per_task.get(key, 0) + 1
        symbols[key] = {str(f.attrs["global_symbol"]) for _, f in r.workload.mod.functions_items()}
    assert all(n >= 1 for n in per_task.values()), per_task
    # TVM's task scheduler checks the global budget before it asks a task for a batch, so the
    # last batch may overshoot it (by less than one batch of 16)
    assert sum(per_task.values()) == sum(len(b) for b in runner.batches) < 64 + 16
    logs = {
        name: (tmp_path / "logs" / name).read_text()
        for name in os.listdir(tmp_path / "logs")
        if "task" in name
    }
    matmul_logs = [text for name, text in logs.items() if name.endswith("_matmul.log")]
    assert len(matmul_logs) == 1, sorted(logs)
    # The matmul task has coordinates: its exploration ended and its own descent ran.
    assert "Droplet: exploring with EvolutionarySearch for 8 trial(s)" in matmul_logs[0]
    assert "from the best record not descended from yet" in matmul_logs[0]
    matmul_keys = [key for key, names in symbols.items() if names == {"matmul"}]
    assert len(matmul_keys) == 1, symbols
    n_matmul = per_task[matmul_keys[0]]
    assert n_matmul > 8, "the matmul task measured nothing after its exploration"


def _two_matmuls():
    """Two tasks whose descents both run: matmuls of two shapes."""
    return tvm.IRModule(
        {
            name: te.create_prim_func(te_workload.matmul(n, n, n)).with_attr("global_symbol", name)
            for name, n in (("mm32", 32), ("mm48", 48))
        }
    )


def _records_per_task(db):
    """Records per task, told apart by the matmul's extent."""
    out = Counter()
    for r in db.get_all_tuning_records():
        out["mm48" if "(48, 48)" in r.workload.mod.script() else "mm32"] += 1
    return out


def test_error_in_one_tasks_generation_ends_only_that_task(target, tmp_path, monkeypatch):
    from ms_droplet import _strategy

    cls = _strategy.DropletStrategy._cls  # the Python class under TVM's derived object
    original = cls._start_descent

    def boom(self, run):
        if str(self._context.task_name) == "mm48":
            raise KeyError("injected fault")
        return original(self, run)

    monkeypatch.setattr(cls, "_start_descent", boom)
    db, runner = _tune(_two_matmuls(), target, tmp_path, trials=96, evo_trials=8, per_iter=8)
    per_task = _records_per_task(db)
    assert per_task["mm48"] == 8, "the failing task's explored batch was lost, or it went on"
    assert per_task["mm32"] > 8, "the healthy task stopped with the failing one"
    assert sum(per_task.values()) == sum(len(b) for b in runner.batches)
    log = _log(tmp_path)
    assert "internal error while generating candidates" in log and "injected fault" in log


def test_error_while_reading_results_keeps_the_batch(target, tmp_path, monkeypatch):
    from ms_droplet import _descent

    original = _descent.Descent.observe
    calls = []

    def boom(self, results):
        calls.append(len(results))
        if len(calls) == 2:
            raise IndexError("injected fault")
        return original(self, results)

    monkeypatch.setattr(_descent.Descent, "observe", boom)
    db, runner = _tune(_two_matmuls(), target, tmp_path, trials=96, evo_trials=8, per_iter=8)
    # every measured candidate was committed, the faulty batch included
    assert len(db.get_all_tuning_records()) == sum(len(b) for b in runner.batches)
    assert len(calls) >= 3, "the other task did not go on after the fault"
    log = _log(tmp_path)
    assert "internal error while reading a batch's results" in log


def test_every_build_timing_out_names_the_cause_and_the_fix(matmul64, target, tmp_path):
    builder = HashBuilder(fail_fraction=1.0, error="LocalBuilder: Timeout, killed after 30 seconds")
    _tune(matmul64, target, tmp_path, builder=builder, trials=32)
    log = _log(tmp_path)
    assert "every build of this batch" in log and "ms_droplet.WarmBuilder()" in log


def test_other_build_errors_do_not_blame_timeouts(matmul64, target, tmp_path):
    _tune(matmul64, target, tmp_path, builder=HashBuilder(fail_fraction=1.0), trials=32)
    log = _log(tmp_path)
    assert "every build of this batch" not in log


# 160 fake trials and two EvolutionarySearches evolving beside the descent: slow.
@pytest.mark.tuning
def test_explore_share_mixes_evolutionary_candidates_into_descent_batches(
    matmul64, target, tmp_path
):
    from ._helpers import assert_only_controls_and_confirmations_repeat

    strategies: list = []
    _, runner = _tune(
        matmul64,
        target,
        tmp_path,
        trials=160,
        explore_share=0.5,
        strategies=strategies,
        final_trials=0,
    )
    sizes = [len(b) for b in runner.batches]
    assert sum(sizes) == 160 and all(s <= 16 for s in sizes)
    descent = _descent_batches(runner, 16)
    assert len(descent) >= 3
    # The side EvolutionarySearch had its share (8 of 16 slots) of the descent batches (it may
    # send fewer when its picks are duplicates)
    (summary,) = strategies[0].summaries
    assert summary["side_trials"] >= 4 * len(descent), summary
    assert summary["side_trials"] <= 8 * len(descent)
    earlier: set[int] = {h for b in runner.batches[: len(runner.batches) - len(descent)] for h in b}
    for batch in descent:
        assert_only_controls_and_confirmations_repeat(batch, earlier)
        earlier.update(batch)
    # same seed, same candidates
    _, again = _tune(
        matmul64, target, tmp_path / "again", trials=160, explore_share=0.5, final_trials=0
    )
    assert again.batches == runner.batches


def _module_hash(mod, trace) -> int:
    """The hash the fake builder gives the kernel of ``trace`` (its artifact name)."""
    return tvm_ffi.structural_hash(scheduled_module(mod, trace))


def test_final_batch_picks_the_fastest_contender(matmul64, target, tmp_path):
    def incumbent_contends(log):
        return any("Droplet: final batch: " in x and "incumbent" in x for x in log.splitlines())

    # a final batch with a descent's incumbent among its contenders (most seeds)
    log, db, runner, strategy = _tune_until(
        matmul64, target, tmp_path, incumbent_contends, trials=160
    )
    assert sum(len(b) for b in runner.batches) == 160, "budget left unused"
    final = runner.batches[-1]
    # 16 kept for it (at most an eighth of 160 -> 20, and one batch of 16): 4 contenders x 4
    # rounds, each round a rotation of the previous one, all of them measured before
    counts = Counter(final)
    assert len(final) == 16 and len(counts) == 4 and set(counts.values()) == {4}, final
    rounds = [final[i : i + 4] for i in range(0, 16, 4)]
    assert all(r[1:] + r[:1] == nxt for r, nxt in itertools.pairwise(rounds))
    earlier = {h for b in runner.batches[:-1] for h in b}
    assert set(final) <= earlier
    (summary,) = strategy.summaries
    assert summary["final_batch"] is True
    (pick,) = strategy.picks
    # the pick is the contender with the lowest true latency (the landscape's noise is 2 %)
    best = min(set(final), key=runner.true_secs)
    assert _module_hash(matmul64, pick.trace) == best
    # the lowest record before the final batch (what stock TVM would have compiled) was one of
    # the contenders (records are the mean of a measurement's samples)
    nth: Counter = Counter()
    means = []
    for batch in runner.batches[:-1]:
        for h in batch:
            secs = runner.samples(h, nth[h])
            nth[h] += 1
            means.append((sum(secs) / len(secs), h))
    assert min(means)[1] in set(final)
    lowest = db.get_top_k(db.commit_workload(matmul64), 1)[0]
    # picked_database answers with the pick; the plain database with its lowest record
    answer = strategy.picked_database(db).query_tuning_record(matmul64, target, "main")
    assert trace_key(answer.trace) == trace_key(pick.trace)
    assert summary["pick_is_lowest"] == (trace_key(pick.trace) == trace_key(lowest.trace))
    line = next(x for x in log.splitlines() if "Droplet: final batch: " in x)
    assert "4 contender(s) (" in line, line
    assert "Droplet: final pick: " in log


def test_final_batch_without_a_descent_picks_among_the_best_explored(matmul64, target, tmp_path):
    strategies: list = []
    _, runner = _tune(matmul64, target, tmp_path, trials=64, evo_trials=64, strategies=strategies)
    sizes = [len(b) for b in runner.batches]
    assert sum(sizes) == 64 and sizes[-1] == 8, sizes  # 64 // 8 kept: 2 contenders x 4 rounds
    assert len(set(runner.batches[-1])) == 2
    (summary,) = strategies[0].summaries
    assert summary["descents"] == 0 and summary["final_batch"] is True
    assert len(strategies[0].picks) == 1


def test_no_final_batch_the_pick_is_the_incumbent(matmul64, target, tmp_path):
    strategies: list = []
    _, runner = _tune(matmul64, target, tmp_path, trials=96, final_trials=0, strategies=strategies)
    assert sum(len(b) for b in runner.batches) == 96
    (summary,) = strategies[0].summaries
    assert summary["final_batch"] is False and summary["descents"] >= 1
    assert len(strategies[0].picks) == 1
    with pytest.raises(ValueError, match="final_trials"):
        ms_droplet.DropletStrategy(final_trials=-1)


def test_a_resumed_tuning_sizes_its_final_batch_by_the_whole_budget(matmul64, target, tmp_path):
    # 32 explored, then 32 more in a second tuning: an eighth of the 64 (not of the 32) is kept
    db = ms.database.MemoryDatabase()
    _tune(matmul64, target, tmp_path / "a", trials=32, evo_trials=32, database=db, final_trials=0)
    strategies: list = []
    _, runner = _tune(
        matmul64,
        target,
        tmp_path / "b",
        trials=32,
        evo_trials=32,
        database=db,
        strategies=strategies,
    )
    assert sum(len(b) for b in runner.batches) == 32
    assert runner.batches[0][0] == runner.batches[0][1], "the resumed run did not descend at once"
    final = runner.batches[-1]
    assert len(final) == 8 and len(set(final)) == 2, final
    assert strategies[0].summaries[0]["final_batch"] is True


@pytest.mark.parametrize("scout_last", [True, False])
def test_the_last_batch_before_the_final_one_holds_no_control(
    matmul64, target, tmp_path, scout_last
):
    # 64 trials: 32 explored, one descent batch of 24 (small_budget_batch=None: not split into
    # batches of 8), the final batch of 8. No challenger of the descent batch could be
    # confirmed, so with scout_last it holds 24 new neighbours and the final batch compares the
    # fastest record with the incumbent.
    strategies: list = []
    _, runner = _tune(
        matmul64,
        target,
        tmp_path,
        trials=64,
        per_iter=32,
        evo_trials=32,
        strategies=strategies,
        scout_last=scout_last,
        small_budget_batch=None,
    )
    sizes = [len(b) for b in runner.batches]
    assert sizes == [32, 24, 8], sizes
    explored, last, final = runner.batches
    (summary,) = strategies[0].summaries
    assert summary["descents"] == 1 and summary["final_batch"] is True
    if scout_last:
        assert len(set(last)) == 24 and not set(last) & set(explored), last
        log = _log(tmp_path)
        assert "Droplet: scouted: 24 of 24 neighbour(s) measured once, no control" in log
    else:
        incumbent = Counter(last).most_common(1)[0][0]
        assert last[0] == last[1] == incumbent and last.count(incumbent) >= 4, last
        assert incumbent in explored
    assert set(final) <= set(explored) | set(last)


class _HashScoreModel(ms.cost_model.PyCostModel):
    """Scores a candidate of the 64x64 matmul by its kernel's hash (the fake builder's)."""

    def __init__(self, mod) -> None:
        self.mod = mod

    def load(self, path: str) -> None:
        pass

    def save(self, path: str) -> None:
        pass

    def update(self, context, candidates, results) -> None:
        pass

    def predict(self, context, candidates):
        import numpy as np

        hashes = [_module_hash(self.mod, c.sch.trace) for c in candidates]
        return np.array([(h % 1000) / 1000.0 for h in hashes], dtype="float64")


def _record_pools(monkeypatch, mod) -> list:
    """Record every pool the strategy scores: (candidate hashes, scores or None)."""
    from ms_droplet import _strategy

    pools: list = []
    score = _strategy.cost_model_scores

    def recording(cost_model, ctx, cands, *, min_records):
        scores = score(cost_model, ctx, cands, min_records=min_records)
        pools.append(([_module_hash(mod, c.sch.trace) for c in cands], scores))
        return scores

    monkeypatch.setattr(_strategy, "cost_model_scores", recording)
    return pools


def _tune_with_pool(mod, target, work_dir, cost_model, **kwargs):
    """64 trials, a quarter of each descent batch of 16 kept from a pool of 16 by ``cost_model``."""
    return _tune(
        mod,
        target,
        work_dir,
        trials=64,
        explore_share=0.25,
        explore_pool=16,
        cost_model=cost_model,
        final_trials=0,
        **kwargs,
    )


def test_explore_pool_measures_the_exploration_candidates_the_cost_model_scores_best(
    matmul64, target, tmp_path, monkeypatch
):
    from tvm.ir.utils import derived_object

    pools = _record_pools(monkeypatch, matmul64)
    strategies: list = []
    _, runner = _tune_with_pool(
        matmul64,
        target,
        tmp_path,
        derived_object(_HashScoreModel)(matmul64),
        strategies=strategies,
    )
    (summary,) = strategies[0].summaries
    measured = {h for batch in runner.batches for h in batch}
    assert len(pools) >= 2 and summary["side_trials"] >= 4, (len(pools), summary)
    for hashes, scores in pools:
        assert len(hashes) == 16 and scores is not None
        ranked = [h for _, h in sorted(zip(scores, hashes, strict=True), key=lambda t: -t[0])]
        # the 4 it scores best (a quarter of the 16 slots) are measured (in its batch, or
        # earlier as a neighbour: the side search does not see the descent's records)
        assert set(ranked[:4]) <= measured, ranked
    # of the 16 of a pool, the kept 4 are measured, a dropped one only where it is also a
    # neighbour of an incumbent: far fewer than half
    pooled = {h for hashes, _ in pools for h in hashes}
    assert len(pooled & measured) < len(pooled) // 2, (len(pooled & measured), len(pooled))


@pytest.mark.tuning
def test_explore_pool_asks_a_warming_xgbmodel_for_its_booster(
    matmul64, target, tmp_path, monkeypatch
):
    pools = _record_pools(monkeypatch, matmul64)
    _tune_with_pool(matmul64, target, tmp_path, ms.cost_model.XGBModel(num_warmup_samples=100))
    # 16 to 64 records: the model warms up (random numbers), its booster scores the pools
    assert pools and all(scores is not None for _, scores in pools), pools
    assert len({round(x, 6) for _, scores in pools for x in scores}) > 1
    assert "the cost model keeps 4 of 16 exploration candidate(s)" in _log(tmp_path)


@pytest.mark.parametrize("final_trials", [0, 16])
def test_descent_batch_caps_every_descent_batch(matmul64, target, tmp_path, final_trials):
    _, runner = _tune(
        matmul64, target, tmp_path, trials=64, descent_batch=6, final_trials=final_trials
    )
    sizes = [len(b) for b in runner.batches]
    assert sum(sizes) == 64, sizes
    assert sizes[0] == 16, "the exploration keeps num_trials_per_iter"
    descent = _descent_batches(runner, 16)
    if final_trials:
        descent = descent[:-1]  # the final batch re-measures its contenders, uncapped
    assert len(descent) >= 6 and all(len(b) <= 6 for b in descent), sizes


def test_small_budget_descends_in_small_batches_and_moves_without_confirmation(
    matmul64, target, tmp_path
):
    # 40 trials in batches of 32, 8 explored, no final batch (fewer than 8 trials for it): the
    # descent has 32 trials, at most one batch, so it takes small steps: batches of 8, a
    # control at the head and in the last slot of each, a move at once when a neighbour is
    # significantly faster
    strategies: list = []
    _, runner = _tune(
        matmul64, target, tmp_path, trials=40, per_iter=32, evo_trials=8, strategies=strategies
    )
    sizes = [len(b) for b in runner.batches]
    assert sizes == [8, 8, 8, 8, 8], sizes
    assert_controls_at_head_and_last(runner.batches[1:], set(runner.batches[0]))
    (summary,) = strategies[0].summaries
    assert summary["moves"] >= 1, "no move in the small-budget descent"
    log = _log(tmp_path)
    assert "a small budget (32 trial(s) to descend, at most one batch of 32)" in log
    assert "re-measuring it beside the incumbent" not in log  # no confirmation batch


def test_carried_moves_lead_the_batch_after_a_move(matmul64, target, tmp_path):
    # the small-budget tuning above with carry_moves: after a move the next batch measures
    # first the moves that were faster at the previous incumbent (the order itself is checked
    # on synthetic landscapes in test_descent_capabilities)
    # a move before the last batch (a move in the last one has no batch to carry it to)
    log, _, _, strategy = _tune_until(
        matmul64,
        target,
        tmp_path,
        lambda log: "Droplet: carried" in log,
        trials=40,
        per_iter=32,
        evo_trials=8,
        carry_moves=True,
    )
    (summary,) = strategy.summaries
    assert summary["moves"] >= 1, "no move in the small-budget descent"
    lines = [
        ln for ln in log.splitlines() if "Droplet: move along" in ln or "Droplet: carried" in ln
    ]
    carried = [i for i, ln in enumerate(lines) if "Droplet: carried: measuring" in ln]
    assert carried, lines
    for i in carried:  # each follows a move and names moves of the previous incumbent
        assert i > 0 and "move along" in lines[i - 1], lines
        assert re.search(r"first: (tile|categorical|compute_location|parallel)#", lines[i])


def test_an_inconclusive_confirmation_is_decided_in_the_next_batch(matmul64, target, tmp_path):
    # reconfirm with noisy measurements: a challenger whose confirmation is inconclusive is
    # confirmed once more (moved to, or rejected), unless another challenger of its batch
    # was confirmed (the descent moved on)
    log, _, _, strategy = _tune_until(
        matmul64,
        target,
        tmp_path,
        lambda log: " inconclusive (ratio " in log,
        trials=160,
        per_iter=16,
        evo_trials=16,
        runner=LandscapeRunner(noise=0.25),
        reconfirm=True,
    )
    assert strategy.reconfirm is True
    decisions = [
        ln.split("Droplet: ", 1)[1]
        for ln in log.splitlines()
        if re.search(r"Droplet: (move along|\S+ not confirmed|\S+ inconclusive)", ln)
    ]
    first = next(i for i, d in enumerate(decisions) if " inconclusive (ratio " in d)
    assert re.search(r"\(needed p < [0-9.e-]+\); re-measuring it once more$", decisions[first])
    coordinate = decisions[first].split(" ", 1)[0]
    after = decisions[first + 1 :]
    assert after, "the inconclusive challenger was never decided"
    decided = after[0].startswith("move along") or any(
        d.startswith(f"move along {coordinate}:") or d.startswith(f"{coordinate} not confirmed")
        for d in after
    )
    assert decided, decisions[first:]


def test_small_budget_batch_none_keeps_the_settings(matmul64, target, tmp_path):
    # the same tuning with small_budget_batch=None: one wide descent batch, spread controls
    _, runner = _tune(
        matmul64, target, tmp_path, trials=40, per_iter=32, evo_trials=8, small_budget_batch=None
    )
    sizes = [len(b) for b in runner.batches]
    assert sizes == [8, 32], sizes
    assert Counter(runner.batches[1]).most_common(1)[0][1] >= 3  # the control recurs through it
    assert "a small budget" not in _log(tmp_path)


def test_small_budget_of_64_trials_ends_with_a_scout_and_the_final_batch(
    matmul64, target, tmp_path
):
    # B=64 with 32 explored, as the small-budget benchmark: 24 trials in batches of 8, the last
    # a scout (no control), then the final batch of 8 over kernels measured before
    strategies: list = []
    _, runner = _tune(
        matmul64, target, tmp_path, trials=64, per_iter=32, evo_trials=32, strategies=strategies
    )
    sizes = [len(b) for b in runner.batches]
    assert sizes == [32, 8, 8, 8, 8], sizes
    explored, first, second, scout, final = runner.batches
    assert first[0] in explored and second[0] in set(explored) | set(first)
    assert not set(scout) & set(explored + first + second), "the scout re-measured a kernel"
    assert set(final) <= set(explored + first + second + scout)
    (summary,) = strategies[0].summaries
    assert summary["final_batch"] is True
    assert "Droplet: scouted: 8 of 8 neighbour(s) measured once, no control" in _log(tmp_path)


@pytest.mark.parametrize("beam", [0, 4])
def test_beam_measures_neighbours_of_the_next_fastest_records(matmul64, target, tmp_path, beam):
    # With beam=4 the first descent batch ranks the start's neighbourhood together with the
    # step-1 neighbours of the 3 next fastest explored records; every candidate is still one
    # coordinate from the start or from one of those records, never anything else.
    work = tmp_path / "w"
    db, _ = _tune(matmul64, target, work, trials=64, per_iter=16, final_trials=0, beam=beam)
    records = db.get_all_tuning_records()
    explored, first_batch = records[:16], records[16:32]
    assert len(first_batch) == 16

    def mean(rec):
        secs = samples_of(rec.run_secs)
        return sum(secs) / len(secs)

    ranked = sorted(explored, key=mean)
    start = coordinates(ranked[0].trace)
    others = []
    for rec in ranked[1:]:
        c = coordinates(rec.trace)
        if c != start and c not in others:
            others.append(c)
    others = others[:3]
    log = _log(work)
    from_others = 0
    for rec in first_batch:
        c = coordinates(rec.trace)
        if num_differences(c, start) in (0, 1):
            continue
        assert beam, "without a beam every candidate is one coordinate from the start"
        assert any(num_differences(c, o) == 1 for o in others), c
        from_others += 1
    if beam:
        found = re.search(r"also holds (\d+) step-1 neighbour\(s\) of the 3 next fastest", log)
        assert found and int(found.group(1)) > 0, [ln for ln in log.splitlines() if "Droplet" in ln]
        assert from_others > 0
    else:
        assert "next fastest" not in log


def test_a_later_descents_beam_skips_the_records_descended_from(
    matmul64, target, tmp_path, monkeypatch
):
    # A later descent starts from the best record not descended from, so the records faster
    # than its start were earlier descents' starts and incumbents (their neighbourhoods were
    # measured): its beam must take the next fastest records after those, not them.
    from ms_droplet import _strategy_descent

    calls: list = []
    pick = _strategy_descent.beam_records

    def recording(run, skip, count):
        calls.append((set(skip), set(run.descended)))
        return pick(run, skip, count)

    monkeypatch.setattr(_strategy_descent, "beam_records", recording)
    _tune(matmul64, target, tmp_path, trials=400, per_iter=32, max_step=1, beam=4)
    assert len(calls) >= 2, "no second descent with a beam"
    for skip, descended in calls:
        assert descended <= skip, descended - skip


def test_beam_neighbours_are_marked_as_jumps_after_the_starts_own_steps(
    matmul64, target, tmp_path, monkeypatch
):
    # A beam neighbour is a step of another record: the descent must see it as a jump (no
    # pattern carried after a move to it, no pair with it), and a point that is also one of
    # the start's own steps must be seen as that step (listed first, it wins the dedup).
    from ms_droplet import _strategy_descent

    listed: list = []
    real = _strategy_descent.Descent

    def recording_descent(start, *, neighbours, **kwargs):
        def recording(point, step):
            out = list(neighbours(point, step))
            if trace_key(point.trace) == start.key and step == 1:
                listed.append(out)
            return out

        return real(start, neighbours=recording, **kwargs)

    monkeypatch.setattr(_strategy_descent, "Descent", recording_descent)
    _tune(matmul64, target, tmp_path, trials=64, per_iter=16, final_trials=0, beam=4)
    assert listed, "the start's neighbourhood was never listed"
    out = listed[0]
    jumps = [nb.jump for nb in out]
    assert any(jumps) and not all(jumps), [nb.coordinate for nb in out]
    assert all(nb.jump == nb.coordinate.startswith("beam[") for nb in out)
    first_jump = jumps.index(True)
    assert not any(jumps[:first_jump]) and all(jumps[first_jump:])


def test_no_beam_while_the_cost_model_warms_up(matmul64, target, tmp_path):
    # TVM's XGBModel predicts random numbers for its first 100 records: a beam would then be a
    # random mix of neighbourhoods, so the descent keeps the start's own neighbourhood
    work = tmp_path / "w"
    db, _ = _tune(
        matmul64,
        target,
        work,
        trials=64,
        per_iter=16,
        final_trials=0,
        beam=4,
        cost_model=ms.cost_model.XGBModel(num_warmup_samples=100),
    )
    log = _log(work)
    assert "no beam for descent 1: the cost model is still warming up (16 record(s))" in log
    assert "next fastest" not in log
    records = db.get_all_tuning_records()
    start = coordinates(min(records[:16], key=lambda r: sum(samples_of(r.run_secs))).trace)
    assert all(num_differences(coordinates(r.trace), start) in (0, 1) for r in records[16:32])
