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
"""``ms-droplet tune-model MODEL.onnx --out DIR``: the command around :func:`tune_onnx`.

``ms_droplet.cli`` adds the target, runner, builder and RPC options shared with ``tune`` and
calls :func:`run` with its own target and runner factories.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["DESCRIPTION", "HELP", "add_arguments", "run"]

HELP = "tune an ONNX model; write the tuned library, check and time it against onnxruntime"
DESCRIPTION = (
    "Import MODEL with TVM's relax ONNX frontend, tune its tasks with droplet, compile it from "
    "the records (MetaScheduleApplyDatabase) and export DIR/model.so; check its outputs against "
    "onnxruntime on the same random inputs (a mismatch is an error), then time onnxruntime, the "
    "untuned and the tuned build interleaved in this process (the tuned one twice, as an A/A "
    "control). DIR also holds the database, report.json and report.md. Running the same command "
    "again continues the tuning; a spent budget only compiles, checks and times. Needs "
    "pip install 'ms_droplet[onnx]'."
)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"expected a tolerance >= 0, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``tune-model`` (those shared with ``tune`` are added by the CLI)."""
    parser.add_argument("model", help="the .onnx file")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output and work dir (reuse it to continue)"
    )
    parser.add_argument(
        "--trials",
        type=_count,
        default=2000,
        help="trial budget over all tasks and all runs into DIR (0: compile, check, time only)",
    )
    parser.add_argument("--max-trials-per-task", type=_count, default=None)
    parser.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME:DxDx..",
        help="static shape of an input, e.g. x:1x3x224x224 (needed for dynamic dimensions; "
        "repeat it for several inputs; NAME may be left out for a one-input model)",
    )
    parser.add_argument("--strategy", choices=["droplet", "evolutionary"], default="droplet")
    parser.add_argument(
        "--num-evolutionary-trials",
        type=_count,
        default=None,
        help="droplet: trials per task explored before the descent (default: trials / (2 x "
        "tasks), between 8 and 300)",
    )
    parser.add_argument(
        "--population-size",
        type=_count,
        default=None,
        help="population of the evolutionary search (default: TVM's 512; smaller searches "
        "faster per batch)",
    )
    parser.add_argument("--seed", type=_count, default=0, help="tuning and input seed")
    parser.add_argument("--rtol", type=_tolerance, default=1e-4, help="output check (1e-4)")
    parser.add_argument("--atol", type=_tolerance, default=1e-5, help="output check (1e-5)")
    parser.add_argument(
        "--no-timing", action="store_true", help="skip the end-to-end timing (still checks)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # The shared --num-trials-per-iter defaults to "every task reached in the first round".
    parser.set_defaults(num_trials_per_iter=None)


def _input_shapes(texts: list[str]) -> dict[str | None, tuple[int, ...]]:
    from ._onnx import parse_input_shape

    shapes: dict[str | None, tuple[int, ...]] = {}
    for text in texts:
        name, shape = parse_input_shape(text)
        if name in shapes:
            raise ValueError(f"--input-shape given twice for {name or 'the input'!r}")
        shapes[name] = shape
    return shapes


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(
    args: argparse.Namespace,
    *,
    make_target: Callable[[str, int | None], Any],
    runner_factory: Callable[[argparse.Namespace], tuple[Callable[[], Any], Any]],
) -> int:
    """Run ``tune-model``; returns the exit code (2: bad input, 1: output mismatch)."""
    try:
        shapes = _input_shapes(args.input_shape)
        make_runner, open_session = runner_factory(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = make_target(args.target, args.num_cores)
    num_cores = int(target.attrs.get("num-cores", 1))
    # TVM's thread pool reads this when it starts: run the builds with the target's cores, as
    # onnxruntime gets num-cores intra-op threads.
    os.environ.setdefault("TVM_NUM_THREADS", str(num_cores))
    if not args.verbose:
        # The progress bar is the display; MetaSchedule's tables stay in DIR/logs.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)
    remote = open_session is not None
    # SIGTERM (e.g. from `timeout`) ends the run like Ctrl-C: builders shut down and the tuning
    # time of the interrupted run is kept in DIR/history.jsonl.
    signal.signal(signal.SIGTERM, _interrupt)
    from ._onnx_tuning import OnnxModelError, OutputMismatchError, TuneModelError, tune_onnx
    from .relax import TaskSummary, format_summary

    print(
        f"ms-droplet tune-model: {args.model} on {target.attrs.get('mcpu', target.kind.name)} "
        f"({num_cores} cores), strategy={args.strategy}, trials={args.trials}, out={args.out}",
        flush=True,
    )
    from ._builder import WarmBuilder

    if args.builder == "warm":
        builder = WarmBuilder(timeout_sec=args.builder_timeout)
    else:
        from tvm.s_tir.meta_schedule.builder import LocalBuilder

        builder = LocalBuilder(timeout_sec=args.builder_timeout)
    try:
        report = tune_onnx(
            args.model,
            target,
            args.out,
            args.trials,
            args.max_trials_per_task,
            input_shapes=shapes,
            num_trials_per_iter=args.num_trials_per_iter,
            builder=builder,
            runner=make_runner(),
            strategy=args.strategy,
            num_evolutionary_trials=args.num_evolutionary_trials,
            pvalue=args.pvalue,
            population_size=args.population_size or None,
            seed=args.seed,
            check=not remote,
            rtol=args.rtol,
            atol=args.atol,
            timing_rounds=0 if (args.no_timing or remote) else args.rounds,
            repeat=args.repeat,
            min_repeat_ms=args.min_repeat_ms,
            progress=not args.no_progress,
            command="ms-droplet " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
    except (OnnxModelError, TuneModelError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OutputMismatchError as err:
        print(err.report.format())
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: every measured trial is in {args.out}; run the same command again "
            "to continue",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if isinstance(builder, WarmBuilder):
            builder.shutdown()
    print("\nper-task records in the database:")
    print(
        format_summary(
            [
                TaskSummary(
                    t["name"],
                    t["weight"],
                    t["trials"],
                    None if t["best_us"] is None else t["best_us"] * 1e-6,
                )
                for t in report.tasks
            ]
        )
    )
    print()
    print(report.format())
    if remote:
        print(
            "measured on the RPC fleet: onnxruntime cannot run through TVM's RPC, so the output "
            f"check and the timing were skipped; on the device, run the same command with "
            f"--out {args.out} (its budget is spent: it only compiles, checks and times)"
        )
    print(f"wrote {os.path.join(args.out, 'report.md')} and report.json")
    return 0
