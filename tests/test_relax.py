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
"""Whole-model tuning with droplet: ``ms_droplet.relax`` on the models of ``ms_droplet.models``.

The tuning tests build and run every candidate (WarmBuilder, LocalRunner) on the small CNN
with a small budget; one module-scoped builder serves them all. The model zoo test only builds
IRModules and extracts tasks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

import ms_droplet
from ms_droplet import _relax_tune, models
from ms_droplet import relax as droplet_relax
from ms_droplet._decisions import trace_key

from ._helpers import assert_only_controls_and_confirmations_repeat
from .conftest import host_target

TRIALS = 32  # 4 tasks x one batch of 8
PER_ITER = 8
EVO_TRIALS = 8  # the first batch of every task explores, the rerun descends


def _strategy(evo_trials: int = EVO_TRIALS) -> ms_droplet.DropletStrategy:
    return ms_droplet.DropletStrategy(
        num_evolutionary_trials=evo_trials,
        evolutionary={"population_size": 64, "genetic_num_iters": 2},
    )


def _runner() -> ms.runner.LocalRunner:
    return ms.runner.LocalRunner(
        evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=10)
    )


def _run(ex: relax.VMExecutable, x: np.ndarray) -> np.ndarray:
    vm = relax.VirtualMachine(ex, tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x)).numpy()


def _num_records(work_dir: Path) -> int:
    return len(ms.database.JSONDatabase(work_dir=str(work_dir)).get_all_tuning_records())


@derived_object
class RecordBatches(PyMeasureCallback):
    """Remembers every measured batch: (task name, trace keys in batch order)."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[tuple[str, list[str]]] = []

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        name = str(task_scheduler.tasks_[task_id].ctx.task_name)
        self.batches.append((name, [trace_key(c.sch.trace) for c in measure_candidates]))


def _callbacks(recorder: RecordBatches) -> list:
    return [*ms.measure_callback.MeasureCallback.create("default"), recorder]


# ------------------------------------------------------------------------------------------
# Fixtures
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builder(warm_builder):
    return warm_builder  # the session's, started once for every test that tunes


@pytest.fixture(scope="module")
def small():
    return models.small_cnn()


@pytest.fixture(scope="module")
def image(small):
    return models.random_input(small[0], seed=1)


@pytest.fixture(scope="module")
def reference(small, image, target):
    mod, params = small
    return _run(relax.build(relax.transform.BindParams("main", params)(mod), target), image)


@pytest.fixture(scope="module")
def tuned(small, target, builder, tmp_path_factory):
    """The small CNN tuned once with tune_relax: (work_dir, batches measured)."""
    mod, params = small
    work_dir = tmp_path_factory.mktemp("relax_tune")
    recorder = RecordBatches()
    db = droplet_relax.tune_relax(
        mod,
        params,
        target,
        str(work_dir),
        TRIALS,
        num_trials_per_iter=PER_ITER,
        builder=builder,
        runner=_runner(),
        strategy=_strategy(),
        measure_callbacks=_callbacks(recorder),
        seed=0,
    )
    assert isinstance(db, ms.database.JSONDatabase)
    return work_dir, recorder.batches


def _run_again(small, target, builder, tuned, budget):
    """tune_relax again in the same work_dir: (records before, after, keys before, batches)."""
    mod, params = small
    work_dir, _ = tuned
    before = _num_records(work_dir)
    keys_before = {
        trace_key(r.trace)
        for r in ms.database.JSONDatabase(work_dir=str(work_dir)).get_all_tuning_records()
    }
    recorder = RecordBatches()
    droplet_relax.tune_relax(
        mod,
        params,
        target,
        str(work_dir),
        budget,
        num_trials_per_iter=PER_ITER,
        builder=builder,
        runner=_runner(),
        strategy=_strategy(),
        measure_callbacks=_callbacks(recorder),
        seed=0,
    )
    return before, _num_records(work_dir), keys_before, recorder.batches


@pytest.fixture(scope="module")
def rerun(small, target, builder, tuned):
    """The same tuning again: its budget is spent, so nothing should be measured."""
    return _run_again(small, target, builder, tuned, TRIALS)


@pytest.fixture(scope="module")
def extended(small, target, builder, tuned, rerun):
    """The same tuning with a doubled budget: it continues where the first run stopped."""
    return _run_again(small, target, builder, tuned, 2 * TRIALS)


# ------------------------------------------------------------------------------------------
# Model zoo (no tuning)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "min_tasks", "max_tasks"),
    [("small", 4, 4), ("resnet18", 15, 30), ("vgg11", 10, 20), ("mobilenet_v2", 25, 45)],
)
def test_model_builds_and_has_tasks(name, min_tasks, max_tasks, target):
    mod, params = models.get_model(name)
    shape, dtype = models.input_shape(mod)
    assert dtype == "float32"
    assert shape == ((1, 3, 32, 32) if name == "small" else (1, 3, 224, 224))
    main = mod["main"]
    assert len(main.params) == 1 + len(params)
    assert {p.name for p in list(main.params)[1:]} == set(params)
    tasks = droplet_relax.extract_tasks(mod, target, params)
    names = [t.task_name for t in tasks]
    assert min_tasks <= len(tasks) <= max_tasks, names
    assert len(set(names)) == len(names)
    assert any("conv2d" in n for n in names)
    assert any("matmul" in n for n in names)
    # weights are bound as constants: no task merely reshapes or transposes a weight
    assert not any(n.startswith("transpose") for n in names), names


def test_tvm_extract_tasks_needs_a_fused_module(small, target):
    """Why tune_relax prepares the module: TVM finds no task in a frontend module."""
    mod, params = small
    assert ms.relax_integration.extract_tasks(mod, target, params) == []
    fused = droplet_relax.legalize_and_fuse(mod, target, params)
    assert len(ms.relax_integration.extract_tasks(fused, target)) == 4
    assert len(droplet_relax.extract_tasks(mod, target, params)) == 4


# ------------------------------------------------------------------------------------------
# tune_relax + compile_relax
# ------------------------------------------------------------------------------------------


@pytest.mark.tuning
def test_tuned_output_matches_reference(small, target, tuned, image, reference):
    mod, params = small
    work_dir, _ = tuned
    ex = droplet_relax.compile_relax(mod, target, str(work_dir), params)
    np.testing.assert_allclose(_run(ex, image), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.tuning
def test_database_covers_every_task(small, target, tuned):
    mod, params = small
    work_dir, batches = tuned
    summaries = droplet_relax.summarize_tuning(mod, target, str(work_dir), params)
    assert len(summaries) == 4
    for s in summaries:
        assert s.trials >= 1, s
        assert s.best_seconds is not None and s.best_seconds > 0, s
    assert sum(s.trials for s in summaries) == _num_records(work_dir)
    assert sum(len(keys) for _, keys in batches) == _num_records(work_dir)
    # every task's workload is in the database, as TVM's own lookup sees it
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    for task in droplet_relax.extract_tasks(mod, target, params):
        assert db.has_workload(task.dispatched[0]), task.task_name
        assert db.query_tuning_record(task.dispatched[0], target, task.task_name) is not None


@pytest.mark.tuning
def test_stock_tvm_uses_the_records(small, target, tuned, reference, image, tmp_path):
    """A process that never imports ms_droplet compiles with the records and gets the output."""
    mod, params = small
    work_dir, _ = tuned
    bound = relax.transform.BindParams("main", params)(mod)
    (tmp_path / "mod.json").write_text(tvm.ir.save_json(bound))
    np.save(tmp_path / "x.npy", image)
    np.save(tmp_path / "ref.npy", reference)
    script = textwrap.dedent(
        """
        import json, sys
        import numpy as np, tvm
        from tvm import relax
        from tvm.s_tir import meta_schedule as ms
        from tvm.s_tir.meta_schedule.relax_integration import compile_relax

        tmp, work_dir, target = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        target = tvm.target.Target(target)
        mod = tvm.ir.load_json(open(tmp + "/mod.json").read())
        db = ms.database.JSONDatabase(work_dir=work_dir)
        ex = compile_relax(db, mod, target, None)
        out = relax.VirtualMachine(ex, tvm.cpu())["main"](
            tvm.runtime.tensor(np.load(tmp + "/x.npy"))).numpy()
        np.testing.assert_allclose(out, np.load(tmp + "/ref.npy"), rtol=1e-4, atol=1e-4)
        # the pipeline of the pass variant, with TVM's own passes only
        with target:
            fused = tvm.transform.Sequential([
                relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
                relax.transform.FoldConstant(), relax.transform.FuseOps(),
                relax.transform.FuseTIR(),
                relax.transform.MetaScheduleApplyDatabase(work_dir),
            ])(mod)
        scheduled = sorted(
            gv.name_hint for gv, f in fused.functions.items()
            if isinstance(f, tvm.tirx.PrimFunc) and f.attrs.get("tirx.is_scheduled", False))
        assert not any(m.startswith("ms_droplet") for m in sys.modules), "imported ms_droplet"
        print("SCHEDULED", json.dumps(scheduled))
        """
    )
    target_json = json.dumps({"kind": "llvm", "mcpu": str(target.attrs["mcpu"]), "num-cores": 2})
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(work_dir), target_json],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SCHEDULED"))
    scheduled = json.loads(line.split(" ", 1)[1])
    assert len(scheduled) == 4, scheduled


# ------------------------------------------------------------------------------------------
# Second run with the same work_dir
# ------------------------------------------------------------------------------------------


@pytest.mark.tuning
def test_continued_run_measures_nothing_twice_except_controls(extended):
    """A run continued with more budget: no candidate of the database is measured again,
    except the descent's controls (the incumbent, first in its batch) and confirmations,
    for the tasks whose exploration is over."""
    before, after, keys_before, batches = extended
    assert batches, "the continued run measured nothing at all"
    # TVM's scheduler checks the global budget before each batch, so it may overshoot by one.
    assert sum(len(keys) for _, keys in batches) <= 2 * TRIALS - before + PER_ITER
    assert after == before + sum(len(keys) for _, keys in batches)
    earlier: dict[str, set] = {}
    for name, keys in batches:
        if name.startswith("reshape"):
            continue  # a one-candidate space: EvolutionarySearch can only repeat it
        seen = earlier.setdefault(name, set(keys_before))
        assert_only_controls_and_confirmations_repeat(keys, seen)
        seen.update(keys)


@pytest.mark.tuning
def test_rerun_measures_nothing_new(rerun):
    before, after, _, _ = rerun
    assert after == before


# ------------------------------------------------------------------------------------------
# The pass variant
# ------------------------------------------------------------------------------------------


@pytest.mark.tuning
def test_pass_in_sequential(small, target, builder, image, reference, tmp_path):
    mod, params = small
    bound = relax.transform.BindParams("main", params)(mod)
    work_dir = str(tmp_path / "pass_db")
    with target:
        seq = tvm.transform.Sequential(
            [
                droplet_relax.legalize_and_fuse_pass(),
                droplet_relax.DropletTuneIRMod(
                    None,
                    work_dir,
                    16,
                    num_trials_per_iter=4,
                    strategy=_strategy(evo_trials=4),
                    builder=builder,
                    runner=_runner(),
                    seed=0,
                ),
                relax.transform.MetaScheduleApplyDatabase(work_dir),
            ]
        )
        out_mod = seq(bound)
    prim_funcs = {
        gv.name_hint: f for gv, f in out_mod.functions.items() if isinstance(f, tvm.tirx.PrimFunc)
    }
    assert len(prim_funcs) == 4
    unscheduled = [n for n, f in prim_funcs.items() if not f.attrs.get("tirx.is_scheduled", False)]
    assert not unscheduled
    assert _num_records(Path(work_dir)) >= 4
    ex = relax.build(out_mod, target)
    np.testing.assert_allclose(_run(ex, image), reference, rtol=1e-4, atol=1e-4)


def test_pass_needs_a_target(small):
    mod, params = small
    tune = droplet_relax.DropletTuneIRMod(params, "/nonexistent", 8)
    fused = droplet_relax.legalize_and_fuse(mod, host_target(), params)
    with pytest.raises(Exception, match="needs a target"):
        tune(fused)


def test_pass_on_unfused_module_tunes_nothing(small, target, tmp_path):
    mod, params = small
    with target:
        out = droplet_relax.DropletTuneIRMod(params, str(tmp_path / "wd"), 8)(mod)
    assert out.same_as(mod) or tvm_ffi.structural_equal(out, mod)
    assert not (tmp_path / "wd").exists()


def test_compile_relax_without_database(small, target, tmp_path):
    mod, params = small
    with pytest.raises(FileNotFoundError, match="no MetaSchedule JSON database"):
        droplet_relax.compile_relax(mod, target, str(tmp_path), params)


def test_tune_relax_defaults():
    import inspect

    ours = inspect.signature(droplet_relax.tune_relax).parameters
    theirs = inspect.signature(ms.relax_integration.tune_relax).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    for name, param in theirs.items():
        if name == "strategy":
            assert ours[name].default == "droplet"
        else:
            assert ours[name].default == param.default, name
            assert ours[name].kind == param.kind, name


def test_tune_relax_warm_builder_and_droplet_default(small, target, monkeypatch):
    """builder="warm" is a WarmBuilder made and shut down by the call (also on errors), the
    default strategy is a DropletStrategy, and the prepared module goes to TVM's tune_relax."""
    mod, params = small
    made: list = []
    calls: list[dict] = []

    class FakeWarmBuilder:
        def __init__(self) -> None:
            self.closed = False
            made.append(self)

        def shutdown(self) -> None:
            self.closed = True

    def fake_tune_relax(mod, params, target, work_dir, max_trials_global, **kwargs):
        calls.append({"mod": mod, "params": params, **kwargs})
        if kwargs.get("seed") == 13:
            raise RuntimeError("tuning failed")
        return "db"

    monkeypatch.setattr(_relax_tune, "WarmBuilder", FakeWarmBuilder)
    monkeypatch.setattr(_relax_tune.ms_relax, "tune_relax", fake_tune_relax)
    assert droplet_relax.tune_relax(mod, params, target, "/unused", 8, builder="warm") == "db"
    assert len(made) == 1 and made[0].closed
    assert calls[0]["builder"] is made[0]
    assert isinstance(calls[0]["strategy"], ms_droplet.DropletStrategy)
    assert calls[0]["params"] == {}
    names = {gv.name_hint for gv in calls[0]["mod"].get_global_vars()}
    assert len(names) == 5  # main and the 4 fused TIR functions
    with pytest.raises(RuntimeError, match="tuning failed"):
        droplet_relax.tune_relax(mod, params, target, "/unused", 8, builder="warm", seed=13)
    assert len(made) == 2 and made[1].closed
    droplet_relax.tune_relax(
        mod, params, target, "/unused", 8, builder="local", strategy="evolutionary"
    )
    assert calls[2]["builder"] == "local" and calls[2]["strategy"] == "evolutionary"
    assert len(made) == 2
