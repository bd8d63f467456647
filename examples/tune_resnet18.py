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
"""Tune a whole relax model (ResNet-18 by default) with droplet and compare with the untuned build.

Run, e.g.::

    python examples/tune_resnet18.py --model small --trials 32
    python examples/tune_resnet18.py --model resnet18 --trials 2000 --work-dir rn18_db

The model (random weights, batch 1, float32) comes from :mod:`ms_droplet.models`. The script
tunes it with :func:`ms_droplet.relax.tune_relax`, builds it twice (untuned with
``tvm.relax.build``, tuned with :func:`ms_droplet.relax.compile_relax`), checks that both give
the same output, times both with the relax VM and prints the records per task. Running it
again with the same ``--work-dir`` continues the tuning (droplet counts the records already in
the database toward its exploration phase); ``--trials 0`` only compiles with the records.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time

import numpy as np
import tvm
from tvm import relax
from tvm.s_tir import meta_schedule as ms

import ms_droplet
from ms_droplet import models
from ms_droplet import relax as droplet_relax


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(models.MODELS), default="resnet18")
    p.add_argument("--trials", type=int, default=2000, help="max_trials_global (0: no tuning)")
    p.add_argument("--trials-per-task", type=int, default=None, help="max_trials_per_task")
    p.add_argument(
        "--num-trials-per-iter",
        type=int,
        default=None,
        help="candidates per batch (default: trials / tasks, between 4 and 64, so that the "
        "first round reaches every task)",
    )
    p.add_argument("--work-dir", default=None, help="tuning records (default: a new temp dir)")
    p.add_argument("--seed", type=int, default=0, help="tuning seed (weights use seed 0)")
    p.add_argument(
        "--num-evolutionary-trials",
        type=int,
        default=64,
        help="trials per task explored by EvolutionarySearch before the descent",
    )
    p.add_argument("--pvalue", type=float, default=0.05, help="droplet significance level")
    p.add_argument("--builder", choices=("warm", "local"), default="warm")
    p.add_argument("--repeat", type=int, default=3, help="runner: samples per candidate")
    p.add_argument("--min-repeat-ms", type=int, default=100, help="runner: ms per sample")
    p.add_argument("--num-cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--runs", type=int, default=10, help="timed runs of each build (median)")
    p.add_argument("-v", "--verbose", action="store_true", help="MetaSchedule's debug logs")
    return p.parse_args(argv)


def _median_seconds(ex: relax.VMExecutable, x: np.ndarray, runs: int) -> float:
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    timer = vm.time_evaluator("main", dev, number=1, repeat=runs, min_repeat_ms=50)
    return float(timer(tvm.runtime.tensor(x, dev)).median)


def _run(ex: relax.VMExecutable, x: np.ndarray) -> np.ndarray:
    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    return vm["main"](tvm.runtime.tensor(x, dev)).numpy()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not args.verbose:
        # MetaSchedule's console handler takes this logger's level: INFO keeps the task
        # scheduler's progress table and drops the cost model's DEBUG lines.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.INFO)
    target = tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": args.num_cores,
        }
    )
    work_dir = args.work_dir or tempfile.mkdtemp(prefix=f"ms_droplet_{args.model}_")
    os.makedirs(work_dir, exist_ok=True)

    mod, params = models.get_model(args.model)
    x = models.random_input(mod, seed=1)
    tasks = droplet_relax.extract_tasks(mod, target, params)
    print(
        f"{args.model}: input {x.shape} {x.dtype}, {len(params)} weight tensors, "
        f"{len(tasks)} tuning tasks; work_dir={work_dir}",
        flush=True,
    )

    if args.trials > 0:
        per_iter = args.num_trials_per_iter or max(4, min(64, args.trials // max(len(tasks), 1)))
        builder = ms_droplet.WarmBuilder() if args.builder == "warm" else "local"
        runner = ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(
                number=1,
                repeat=args.repeat,
                min_repeat_ms=args.min_repeat_ms,
                enable_cpu_cache_flush=False,
            )
        )
        strategy = ms_droplet.DropletStrategy(
            num_evolutionary_trials=args.num_evolutionary_trials, pvalue=args.pvalue
        )
        start = time.perf_counter()
        try:
            droplet_relax.tune_relax(
                mod,
                params,
                target,
                work_dir,
                max_trials_global=args.trials,
                max_trials_per_task=args.trials_per_task,
                num_trials_per_iter=per_iter,
                builder=builder,
                runner=runner,
                strategy=strategy,
                seed=args.seed,
            )
        finally:
            if isinstance(builder, ms_droplet.WarmBuilder):
                builder.shutdown()
        print(f"tuning: {time.perf_counter() - start:.1f} s", flush=True)

    start = time.perf_counter()
    untuned = relax.build(relax.transform.BindParams("main", params)(mod), target)
    tuned = droplet_relax.compile_relax(mod, target, work_dir, params)
    print(f"compiling both builds: {time.perf_counter() - start:.1f} s", flush=True)

    reference = _run(untuned, x)
    output = _run(tuned, x)
    np.testing.assert_allclose(output, reference, rtol=1e-4, atol=1e-4)
    print(
        f"outputs match (shape {output.shape}, max |diff| "
        f"{float(np.max(np.abs(output - reference))):.3g})"
    )

    t_untuned = _median_seconds(untuned, x, args.runs)
    t_tuned = _median_seconds(tuned, x, args.runs)
    print(f"end-to-end latency (median of {args.runs} runs):")
    print(f"  untuned: {t_untuned * 1e3:10.3f} ms")
    print(f"  tuned:   {t_tuned * 1e3:10.3f} ms   ({t_untuned / t_tuned:.2f}x faster)")

    summaries = droplet_relax.summarize_tuning(mod, target, work_dir, params)
    print("\nper-task records in the database:")
    print(droplet_relax.format_summary(summaries))
    untuned_tasks = [s.name for s in summaries if s.best_seconds is None]
    if untuned_tasks:
        print(f"\n{len(untuned_tasks)} task(s) without a successful record run unscheduled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
