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
"""Tune an ONNX model end to end: import, tune, compile, export, check, time, report.

:func:`tune_onnx` (also ``ms_droplet.relax.tune_onnx`` and ``ms-droplet tune-model``) writes
into one folder, which is also MetaSchedule's work dir::

    work_dir/
      database_workload.json, database_tuning_record.json   every measured trial
      logs/                                                 MetaSchedule's task logs
      tune_model.json     the model's SHA-256, input shapes, target (a rerun must match)
      model.so            the tuned library (relax VM executable, ``export_library``)
      report.json, report.md   output check, end-to-end latencies, per-task records
      history.jsonl       one line per run: trials so far, tuning time, latencies (a run
                          interrupted while tuning leaves a line with "interrupted": true)

Running it again with the same folder continues: the records already in the database count
toward the budget (a run whose budget is spent measures nothing and only compiles, checks and
times), and droplet never measures a candidate that is in the database.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

from . import _onnx
from ._database import check_database, count_records
from ._evaluate import time_interleaved
from ._factories import cpu_model
from ._files import ensure_writable_dir
from ._intervals import median_ci
from ._onnx import InputSpec, OnnxModelError, OutputComparison
from ._onnx_report import BUILDS, RATIOS, ModelTuneReport, OutputMismatchError, TuneModelError
from ._stats import median
from ._strategy import DropletStrategy

__all__ = [
    "InputSpec",
    "ModelTuneReport",
    "OnnxModelError",
    "OutputMismatchError",
    "TuneModelError",
    "tune_onnx",
]

logger = logging.getLogger("ms_droplet.onnx")

LIBRARY = "model.so"
SETTINGS = "tune_model.json"
HISTORY = "history.jsonl"


@derived_object
class _Progress(PyMeasureCallback):
    """Counts the trials of this run (and failed ones) and advances a tqdm bar."""

    def __init__(self, total: int, enabled: bool) -> None:
        super().__init__()
        self.trials = 0
        self.failed = 0
        self.bar = None
        if enabled and total > 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="trial", dynamic_ncols=True, file=sys.stderr)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        n = len(measure_candidates)
        self.trials += n
        self.failed += sum(
            1
            for b, r in zip(builder_results, runner_results, strict=True)
            if b.error_msg is not None or r.error_msg is not None
        )
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(failed=self.failed, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ------------------------------------------------------------------------------------------
# Work dir
# ------------------------------------------------------------------------------------------


def _check_work_dir(work_dir: str, settings: dict[str, Any]) -> None:
    """Create ``work_dir``, or check that its records are the tuning of the same model, input
    shapes and target, and that its database is readable."""
    try:
        ensure_writable_dir(work_dir)
    except OSError as err:
        raise TuneModelError(f"the work dir {work_dir!r} is not writable: {err}") from None
    problems = check_database(work_dir)
    if problems:
        fix = (
            "; a crash left a truncated last line: repair it with "
            f"`ms-droplet db repair {work_dir}`"
            if all(p.is_last_line for p in problems)
            else ""
        )
        raise TuneModelError(
            f"unreadable database record(s) in {work_dir}: "
            + "; ".join(str(p) for p in problems)
            + fix
        )
    path = os.path.join(work_dir, SETTINGS)
    if not os.path.exists(path) or not count_records(work_dir):
        return  # nothing measured yet: any model may start here
    try:
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise TuneModelError(
            f"cannot read {path}: {err}; remove it or use another folder"
        ) from None
    for key, what in (("model_sha256", "model"), ("inputs", "input shapes"), ("target", "target")):
        if stored.get(key) != settings[key]:
            raise TuneModelError(
                f"{work_dir!r} holds the tuning of another {what} ({stored.get(key)!r}, now "
                f"{settings[key]!r}); use another --out folder, or the same {what} to resume"
            )


def _save_settings(work_dir: str, settings: dict[str, Any]) -> None:
    with open(os.path.join(work_dir, SETTINGS), "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=1)


def _previous_runs(work_dir: str) -> list[dict[str, Any]]:
    path = os.path.join(work_dir, HISTORY)
    if not os.path.exists(path):
        return []
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                logger.warning("%s: skipping an unreadable line", path)
    return runs


# ------------------------------------------------------------------------------------------
# Builds: running, checking, timing
# ------------------------------------------------------------------------------------------


def _flatten(value: Any) -> list[np.ndarray]:
    if isinstance(value, tvm.runtime.Tensor):
        return [value.numpy()]
    if isinstance(value, (list, tuple)) or hasattr(value, "__len__"):
        return [arr for item in value for arr in _flatten(item)]
    raise TypeError(f"unexpected output of type {type(value).__name__}")


class _Build:
    """A relax VM over an executable, with the model's inputs on the CPU."""

    def __init__(self, executable: Any, arrays: Mapping[str, np.ndarray]) -> None:
        from tvm import relax

        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(executable, self.dev)
        self.args = [tvm.runtime.tensor(a, self.dev) for a in arrays.values()]

    def outputs(self) -> list[np.ndarray]:
        return _flatten(self.vm["main"](*self.args))

    def timer(self, *, number: int, repeat: int, min_repeat_ms: int) -> Callable[[], list[float]]:
        f = self.vm.time_evaluator(
            "main", self.dev, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
        )
        return lambda: list(f(*self.args).results)


def _compare(
    build: str, actual, expected, names, rtol: float, atol: float
) -> list[OutputComparison]:
    comps = _onnx.compare_outputs(actual, expected, names, rtol=rtol, atol=atol)
    for c in comps:
        logger.info(
            "%s output %s: max |diff| %.3g, max rel %.3g, %s",
            build,
            c.name,
            c.max_abs_diff,
            c.max_rel_diff,
            "ok" if c.passed else "MISMATCH",
        )
    return comps


def _timing(
    timers: Sequence[Callable[[], list[float]]], *, rounds: int, repeat: int
) -> dict[str, Any]:
    groups = time_interleaved(timers, rounds=rounds)
    builds: dict[str, Any] = {}
    per_round: dict[str, list[float]] = {}
    for name, rounds_of in zip(BUILDS, groups, strict=True):
        meds = [median(g) for g in rounds_of]
        per_round[name] = meds
        samples = [x for g in rounds_of for x in g]
        lo, hi = median_ci(meds)
        builds[name] = {
            "median_ms": median(samples) * 1e3,
            "ci95_ms": [lo * 1e3, hi * 1e3],
            "samples_s": samples,
        }
    ratios = {}
    for a, b in RATIOS:
        rs = [x / y for x, y in zip(per_round[a], per_round[b], strict=True)]
        lo, hi = median_ci(rs)
        ratios[f"{a} / {b}"] = {"median": median(rs), "ci95": [lo, hi], "per_round": rs}
    return {"rounds": rounds, "repeat": repeat, "builds": builds, "ratios": ratios}


# ------------------------------------------------------------------------------------------
# The whole thing
# ------------------------------------------------------------------------------------------


def tune_onnx(
    model: str | os.PathLike | Any,
    target: Any,
    work_dir: str,
    max_trials_global: int,
    max_trials_per_task: int | None = None,
    *,
    input_shapes: Mapping[str | None, Sequence[int]] | None = None,
    num_trials_per_iter: int | None = None,
    builder: Any = "warm",
    runner: Any = "local",
    strategy: Any = "droplet",
    num_evolutionary_trials: int | None = None,
    pvalue: float = 0.05,
    population_size: int | None = None,
    cost_model: Any = "xgb",
    seed: int = 0,
    check: bool = True,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    timing_rounds: int = 10,
    number: int = 1,
    repeat: int = 3,
    min_repeat_ms: int = 100,
    export: bool = True,
    progress: bool = False,
    command: str = "",
) -> ModelTuneReport:
    """Tune an ONNX model with Droplet Search, then compile, export, check and time it.

    The model is imported with TVM's relax ONNX frontend at static input shapes, its tasks are
    tuned with :func:`ms_droplet.relax.tune_relax` (records already in ``work_dir`` count toward
    the budget, so a rerun continues), and it is compiled from the records with
    :func:`ms_droplet.relax.compile_relax` (``MetaScheduleApplyDatabase``) and exported to
    ``work_dir/model.so``. The exported library's outputs are compared with onnxruntime's on
    the same random inputs; then onnxruntime, the untuned build (the same pipeline without
    records) and the tuned library (twice, as an A/A control) are timed interleaved in this
    process, rotating the order every round.

    Parameters
    ----------
    model : Union[str, os.PathLike, onnx.ModelProto]
        The ``.onnx`` file (or a loaded model).
    target : Union[str, dict, Target]
        The compilation target, e.g. ``{"kind": "llvm", "mcpu": ..., "num-cores": 2}``;
        onnxruntime gets ``num-cores`` intra-op threads.
    work_dir : str
        The output folder (see the module documentation); reuse it to continue.
    max_trials_global : int
        Trials over all tasks and all runs in ``work_dir`` (0: compile, check and time only).
    max_trials_per_task : Optional[int]
        The most trials of this run per task.
    input_shapes : Optional[Mapping[str, Sequence[int]]]
        Static shapes of inputs with dynamic dimensions (key None: the only input).
    num_trials_per_iter : Optional[int]
        Candidates per batch; None: ``max_trials_global / tasks`` within [4, 64], so that the
        first round reaches every task.
    builder : Union[str, Builder]
        ``"warm"`` (a :class:`~ms_droplet.WarmBuilder`, the default), ``"local"`` or a builder.
    runner : Union[str, Runner]
        The runner (``"local"``, or e.g. an ``RPCRunner``).
    strategy : Union[str, SearchStrategy]
        ``"droplet"`` (a :class:`~ms_droplet.DropletStrategy` exploring
        ``num_evolutionary_trials`` per task) or any MetaSchedule strategy.
    num_evolutionary_trials : Optional[int]
        Droplet's exploration per task; None: ``max_trials_global / (2 * tasks)`` within
        [8, 300], so that half of a task's share is left for the descent.
    pvalue : float
        Droplet's significance level (with ``strategy="droplet"``).
    population_size : Optional[int]
        The population of the evolutionary search (with ``strategy="droplet"`` or
        ``"evolutionary"``); None: TVM's default (512). Smaller populations search faster per
        batch, which matters on small machines with many tasks.
    cost_model : Union[str, CostModel]
        The cost model of the exploration.
    seed : int
        Seed of the tuning and of the random inputs.
    check : bool
        Compare the outputs with onnxruntime's (a mismatch raises :class:`OutputMismatchError`
        after the report is written).
    rtol, atol : float
        The tolerances of the check, as in ``numpy.allclose``.
    timing_rounds : int
        Interleaved timing rounds (0: no timing; needs ``check``'s onnxruntime session).
    number, repeat, min_repeat_ms : int
        ``time_evaluator`` settings of every timed build (onnxruntime's timer follows them).
    export : bool
        Write ``work_dir/model.so``.
    progress : bool
        Show a progress bar over the trials (stderr).
    command : str
        The command line to record in the report.

    Returns
    -------
    report : ModelTuneReport
        Also written to ``work_dir/report.json`` and ``report.md``.

    Raises
    ------
    OnnxModelError
        The model cannot be read, imported, or run by onnxruntime, or a shape is missing or
        wrong.
    TuneModelError
        ``work_dir`` holds another tuning or a damaged database.
    OutputMismatchError
        The tuned build's outputs differ from onnxruntime's.
    """
    from . import relax as droplet_relax

    if max_trials_global < 0:
        raise ValueError(f"max_trials_global must be >= 0, got {max_trials_global}")
    if timing_rounds < 0:
        raise ValueError(f"timing_rounds must be >= 0, got {timing_rounds}")
    if timing_rounds and not check:
        raise ValueError("timing needs the onnxruntime session of the check: check=True")
    if isinstance(model, (str, os.PathLike)):
        model_path = os.path.abspath(os.fspath(model))
        proto = _onnx.load_model(model_path)
        sha = _onnx.model_sha256(model_path)
    else:
        import hashlib

        model_path = "<onnx.ModelProto>"
        proto = model
        sha = hashlib.sha256(proto.SerializeToString()).hexdigest()
    inputs = _onnx.model_inputs(proto, input_shapes)
    output_names = [o.name for o in proto.graph.output]
    target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
    num_cores = int(target.attrs.get("num-cores", os.cpu_count() or 1))
    work_dir = os.path.abspath(work_dir)
    settings = {
        "model_sha256": sha,
        "inputs": [asdict(s) | {"shape": list(s.shape)} for s in inputs],
        "target": str(target),
    }
    _check_work_dir(work_dir, settings)

    mod = _onnx.import_model(proto, inputs)
    arrays = _onnx.random_inputs(inputs, seed)
    session, reference = None, None
    if check:  # before tuning: a model onnxruntime cannot run fails now, not after hours
        session = _onnx.onnxruntime_session(proto, num_threads=num_cores)
        reference = _onnx.run_onnxruntime(session, arrays)
    _save_settings(work_dir, settings)

    tasks = droplet_relax.extract_tasks(mod, target)
    num_tasks = max(len(tasks), 1)
    if num_trials_per_iter is None:
        num_trials_per_iter = max(4, min(64, max_trials_global // num_tasks))
    explore = None
    if isinstance(strategy, str) and strategy == "droplet":
        explore = num_evolutionary_trials
        if explore is None:
            explore = max(8, min(300, max_trials_global // (2 * num_tasks)))
        evolutionary = {} if population_size is None else {"population_size": population_size}
        strategy = DropletStrategy(
            num_evolutionary_trials=explore, pvalue=pvalue, evolutionary=evolutionary
        )
    elif isinstance(strategy, str) and strategy == "evolutionary" and population_size:
        strategy = ms.search_strategy.EvolutionarySearch(population_size=population_size)
    elif isinstance(strategy, DropletStrategy):
        explore = strategy.num_evolutionary_trials
    strategy_name = (
        "droplet"
        if isinstance(strategy, DropletStrategy)
        else strategy
        if isinstance(strategy, str)
        else type(strategy).__name__
    )

    before = count_records(work_dir)
    remaining = max(max_trials_global - before, 0)
    logger.info(
        "%s: %d task(s), %d record(s) in %s, %d trial(s) to run",
        model_path,
        len(tasks),
        before,
        work_dir,
        remaining,
    )
    counter = _Progress(remaining, progress)
    start = time.perf_counter()
    try:
        if remaining > 0:
            droplet_relax.tune_relax(
                mod,
                None,
                target,
                work_dir,
                max_trials_global,
                max_trials_per_task,
                num_trials_per_iter=num_trials_per_iter,
                builder=builder,
                runner=runner,
                cost_model=cost_model,
                measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), counter],
                strategy=strategy,
                seed=seed,
            )
    except BaseException:  # Ctrl-C, SIGTERM (the CLI raises KeyboardInterrupt): keep the time
        _append_history(
            work_dir,
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "interrupted": True,
                "trials_in_database": count_records(work_dir),
                "trials": counter.trials,
                "tuning_seconds": time.perf_counter() - start,
            },
        )
        raise
    finally:
        counter.close()
    tuning_seconds = time.perf_counter() - start if remaining > 0 else 0.0
    previous = _previous_runs(work_dir)

    database = (
        None if count_records(work_dir) else ms.database.MemoryDatabase()
    )  # no record yet: compile the untuned schedules
    tuned_ex = droplet_relax.compile_relax(
        mod, target, None if database else work_dir, database=database
    )
    library = None
    if export:
        library = os.path.join(work_dir, LIBRARY)
        tuned_ex.export_library(library)
        tuned_ex = tvm.runtime.load_module(library)  # check and time what the user gets
    untuned_ex = droplet_relax.compile_relax(
        mod, target, None, database=ms.database.MemoryDatabase()
    )

    report = ModelTuneReport(
        model=model_path,
        model_sha256=sha,
        inputs=settings["inputs"],
        outputs=output_names,
        target=str(target),
        num_cores=num_cores,
        machine={
            "cpu": cpu_model(),
            "tvm": tvm.__version__,
            "onnxruntime": _version_of("onnxruntime"),
            "onnx": _version_of("onnx"),
            "python": platform.python_version(),
        },
        work_dir=work_dir,
        library=library,
        num_tasks=len(tasks),
        max_trials_global=max_trials_global,
        trials_in_database=count_records(work_dir),
        trials_this_run=counter.trials,
        failed_trials_this_run=counter.failed,
        tuning_seconds_this_run=tuning_seconds,
        tuning_seconds_total=tuning_seconds
        + sum(float(r.get("tuning_seconds", 0.0)) for r in previous),
        strategy=strategy_name,
        num_evolutionary_trials=explore,
        num_trials_per_iter=num_trials_per_iter,
        seed=seed,
        command=command,
    )
    tuned = _Build(tuned_ex, arrays)
    untuned = _Build(untuned_ex, arrays)
    if check:
        comps = {
            "tuned": _compare("tuned", tuned.outputs(), reference, output_names, rtol, atol),
            "untuned": _compare("untuned", untuned.outputs(), reference, output_names, rtol, atol),
        }
        report.check = {"rtol": rtol, "atol": atol, "seed": seed, "comparisons": []}
        for build, cs in comps.items():
            report.check[build] = {
                "passed": all(c.passed for c in cs),
                "max_abs_diff": max(c.max_abs_diff for c in cs),
            }
            report.check["comparisons"] += [asdict(c) | {"build": build} for c in cs]
    else:
        report.check = {"skipped": "not checked (check=False)"}

    if timing_rounds and report.passed:
        timers = [
            _onnx.onnxruntime_timer(
                session, arrays, number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
            ),
            untuned.timer(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms),
            tuned.timer(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms),
            _Build(tuned_ex, arrays).timer(
                number=number, repeat=repeat, min_repeat_ms=min_repeat_ms
            ),
        ]
        report.timing = _timing(timers, rounds=timing_rounds, repeat=repeat)
        report.timing["onnxruntime_threads"] = num_cores
        report.timing["tvm_threads"] = _tvm_threads()  # after the timing: the pool exists
        report.timing["number"] = number
        report.timing["min_repeat_ms"] = min_repeat_ms
    elif timing_rounds:
        report.timing = {"skipped": "not timed: the tuned build's outputs do not match"}
    else:
        report.timing = {"skipped": "not timed (timing_rounds=0)"}

    summaries = droplet_relax.summarize_tuning(
        mod, target, None if database else work_dir, database=database
    )
    report.tasks = [
        {
            "name": s.name,
            "weight": s.weight,
            "trials": s.trials,
            "best_us": None if s.best_seconds is None else s.best_seconds * 1e6,
        }
        for s in summaries
    ]
    _write(report, work_dir)
    if not report.passed:
        bad = [c for c in report.check["comparisons"] if c["build"] == "tuned" and not c["passed"]]
        worst = max(bad, key=lambda c: c["max_abs_diff"])
        raise OutputMismatchError(
            f"the tuned build's output {worst['name']!r} differs from onnxruntime's: max |diff| "
            f"{worst['max_abs_diff']:.3g}, max rel diff {worst['max_rel_diff']:.3g} (rtol={rtol:g}"
            f", atol={atol:g}); the report is in {work_dir}",
            report,
        )
    return report


def _version_of(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _tvm_threads() -> int | None:
    try:
        return int(tvm.runtime.num_threads())
    except (AttributeError, tvm.error.TVMError):
        return None


def _write(report: ModelTuneReport, work_dir: str) -> None:
    data = asdict(report)
    with open(os.path.join(work_dir, "report.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(work_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write(report.markdown())
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "trials_in_database": report.trials_in_database,
        "trials": report.trials_this_run,
        "tuning_seconds": report.tuning_seconds_this_run,
        "tuning_seconds_total": report.tuning_seconds_total,
        "check_passed": report.passed if report.check.get("comparisons") else None,
        "latency_ms": {
            name: {"median": b["median_ms"], "ci95": b["ci95_ms"]}
            for name, b in report.timing.get("builds", {}).items()
        },
    }
    _append_history(work_dir, line)


def _append_history(work_dir: str, line: Mapping[str, Any]) -> None:
    with open(os.path.join(work_dir, HISTORY), "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
