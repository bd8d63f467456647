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
"""Compare TVM's ``LocalBuilder`` with :class:`~ms_droplet.WarmBuilder` by tuning.

Tunes one workload with the same seed once per builder and round, interleaved (``L W L W`` for
``--rounds 2``), with MetaSchedule's evolutionary search and ``LocalRunner``, and reports for
each run the tuning wall time, the time spent in ``build()``, the number of trials, the number
of build failures and timeouts, and the best latency.

Run ``python -m ms_droplet.bench.builder --help`` for the options. The search depends on
measured latencies, so even with one seed the two builders need not explore the same
candidates; compare wall times and timeout counts, and treat latencies as a sanity check.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.utils import cpu_count

from .._cli_args import positive_int
from .._factories import host_target, machine_info, make_builder
from .._records import best_record, find_workload, latency
from .._workloads import load_workload, parse_matmul

__all__ = [
    "BUILDERS",
    "CountingBuilder",
    "build_parser",
    "main",
    "markdown_table",
    "parse_workload",
    "summarize",
    "tune_once",
]

#: The builders compared, by the letter of the interleaving order (``L W L W ...``).
BUILDERS = {"L": "LocalBuilder", "W": "WarmBuilder"}


@derived_object
class CountingBuilder(PyBuilder):
    """A builder that delegates to another one and counts calls, failures and timeouts.

    Parameters
    ----------
    inner : Builder
        The builder doing the work.
    """

    def __init__(self, inner: ms.builder.Builder) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.candidates = 0
        self.failures = 0
        self.timeouts = 0
        self.seconds = 0.0

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        """Build with the inner builder and count the outcome."""
        start = time.perf_counter()
        results = self.inner.build(build_inputs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.candidates += len(results)
        for result in results:
            if result.error_msg is not None:
                self.failures += 1
                if "timeout" in str(result.error_msg).lower():
                    self.timeouts += 1
        return results


def parse_workload(spec: str) -> str:
    """Check a ``matmul:M,N,K`` spec for argparse; return it unchanged.

    Raises
    ------
    argparse.ArgumentTypeError
        For another workload kind, malformed sizes or a size below 1.
    """
    sizes = parse_matmul(spec)
    if sizes is None:
        raise argparse.ArgumentTypeError(f"unsupported workload {spec!r}; use matmul:M,N,K")
    if min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive in {spec!r}")
    return spec.strip()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def tune_once(
    name: str,
    builder: ms.builder.Builder,
    round_index: int,
    args: argparse.Namespace,
    target: tvm.target.Target,
    work_dir: Path,
) -> dict[str, Any]:
    """Tune the workload once with ``builder`` (shown as ``name``) and return the raw numbers.

    Parameters
    ----------
    name : str
        The builder's name in the results (``LocalBuilder`` or ``WarmBuilder``).
    builder : Builder
        The builder; it is wrapped in a :class:`CountingBuilder`.
    round_index : int
        The round, recorded with the numbers.
    args : argparse.Namespace
        ``workload``, ``trials``, ``trials_per_iter`` and ``seed`` of the command line.
    target : Target
        The target to tune for.
    work_dir : Path
        The work dir of this run.
    """
    mod = load_workload(args.workload)
    m, n, k = parse_matmul(args.workload) or (0, 0, 0)
    start = time.perf_counter()
    counting = CountingBuilder(builder)
    database = ms.tune_tir(
        mod,
        target,
        str(work_dir),
        max_trials_global=args.trials,
        num_trials_per_iter=args.trials_per_iter,
        builder=counting,
        runner=ms.runner.LocalRunner(),
        seed=args.seed,
        strategy="evolutionary",
    )
    wall = time.perf_counter() - start
    latencies = [latency(r.run_secs) for r in database.get_all_tuning_records()]
    valid = [x for x in latencies if x is not None]
    best_rec = best_record(database, find_workload(database, mod))
    best = None if best_rec is None else latency(best_rec.run_secs)
    return {
        "round": round_index,
        "builder": name,
        "wall_s": wall,
        "build_s": counting.seconds,
        "build_calls": counting.calls,
        "candidates_built": counting.candidates,
        "build_failures": counting.failures,
        "build_timeouts": counting.timeouts,
        "trials": len(latencies),
        "failed_trials": len(latencies) - len(valid),
        "best_latency_us": None if best is None else best * 1e6,
        "best_gflops": None if best is None else 2.0 * m * n * k / best / 1e9,
    }


_COLUMNS = [
    ("round", "round", "{}"),
    ("builder", "builder", "{}"),
    ("wall_s", "wall s", "{:.1f}"),
    ("build_s", "build() s", "{:.1f}"),
    ("build_calls", "build calls", "{}"),
    ("candidates_built", "built", "{}"),
    ("build_failures", "build failures", "{}"),
    ("build_timeouts", "of which timeouts", "{}"),
    ("trials", "trials", "{}"),
    ("failed_trials", "failed trials", "{}"),
    ("best_latency_us", "best us", "{:.1f}"),
    ("best_gflops", "best GFLOP/s", "{:.2f}"),
]


def _cell(fmt: str, value: Any) -> str:
    return "-" if value is None else fmt.format(value)


def markdown_table(runs: Sequence[dict[str, Any]]) -> str:
    """The raw numbers as a markdown table."""
    lines = [
        "| " + " | ".join(title for _, title, _ in _COLUMNS) + " |",
        "|" + "|".join("---" for _ in _COLUMNS) + "|",
    ]
    for run in runs:
        lines.append("| " + " | ".join(_cell(fmt, run[key]) for key, _, fmt in _COLUMNS) + " |")
    return "\n".join(lines)


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Medians of the main numbers per builder."""
    summary: dict[str, dict[str, float | None]] = {}
    for name in BUILDERS.values():
        mine = [run for run in runs if run["builder"] == name]
        if not mine:
            continue
        summary[name] = {}
        for key in ("wall_s", "build_s", "build_timeouts", "best_latency_us"):
            values = [run[key] for run in mine if run[key] is not None]
            summary[name][key] = statistics.median(values) if values else None
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m ms_droplet.bench.builder",
        description=(
            "Tune one workload with TVM's LocalBuilder and with ms_droplet's WarmBuilder "
            "(interleaved: L W L W ...) and compare wall time, build timeouts and latency."
        ),
    )
    parser.add_argument("--trials", type=positive_int, default=128, help="max_trials_global")
    parser.add_argument(
        "--trials-per-iter", type=positive_int, default=64, help="num_trials_per_iter"
    )
    parser.add_argument(
        "--workload",
        type=parse_workload,
        default="matmul:512,512,512",
        metavar="matmul:M,N,K",
        help="float32 matmul C[M,N] = A[M,K] B[K,N] (default: matmul:512,512,512)",
    )
    parser.add_argument("--seed", type=int, default=0, help="tuning seed (default: 0)")
    parser.add_argument(
        "--rounds", type=positive_int, default=1, help="runs per builder, interleaved"
    )
    parser.add_argument(
        "--builder-timeout",
        type=_positive_float,
        default=30.0,
        help="per-build timeout in seconds of both builders (default: 30, TVM's default)",
    )
    parser.add_argument(
        "--max-workers",
        type=positive_int,
        default=None,
        help="build processes of both builders (default: number of logical CPUs)",
    )
    parser.add_argument(
        "--num-cores",
        type=positive_int,
        default=None,
        help="num-cores of the llvm target (default: number of logical CPUs)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="write results.json and results.md here"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log builder activity")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.verbose:
        logging.getLogger("ms_droplet.builder").setLevel(logging.INFO)
    target = host_target(args.num_cores or cpu_count(logical=True))
    command = shlex.join([sys.executable, "-m", "ms_droplet.bench.builder", *argv])
    machine = machine_info()
    info = {
        "command": command,
        "tvm_version": machine["tvm_version"],
        "python": machine["python"],
        "cpu_model": machine["cpu_model"],
        "logical_cpus": machine["cores"],
        "target": str(target),
        "workload": f"{args.workload} float32",
        "seed": args.seed,
        "trials": args.trials,
        "trials_per_iter": args.trials_per_iter,
        "rounds": args.rounds,
        "builder_timeout_s": args.builder_timeout,
        "max_workers": args.max_workers or cpu_count(logical=True),
    }
    # The first tune_tir() in a process imports tvm.s_tir.tensor_intrin (~15-30 s on small
    # machines) in the tuning process itself; do it here so that it burdens neither builder.
    start = time.perf_counter()
    importlib.import_module("tvm.s_tir.tensor_intrin")

    info["parent_warm_up_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(info, indent=2))
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ms_droplet_bench_builder_") as tmp:
        work_root = (args.out / "work_dirs") if args.out is not None else Path(tmp)
        for round_index in range(args.rounds):
            for key in "LW":
                work_dir = work_root / f"round{round_index}_{BUILDERS[key]}"
                work_dir.mkdir(parents=True, exist_ok=True)
                print(f"round {round_index}: tuning with {BUILDERS[key]} ...", flush=True)
                builder, owned = make_builder(
                    "local" if key == "L" else "warm",
                    args.builder_timeout,
                    max_workers=args.max_workers,
                )
                try:
                    run = tune_once(BUILDERS[key], builder, round_index, args, target, work_dir)
                finally:
                    if owned:
                        builder.shutdown()
                runs.append(run)
                print(json.dumps(run), flush=True)
    summary = summarize(runs)
    table = markdown_table(runs)
    print()
    print(table)
    print()
    print("medians: " + json.dumps(summary, indent=2))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"info": info, "runs": runs, "medians": summary}
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        header = "\n".join(f"- {key}: `{value}`" for key, value in info.items())
        (args.out / "results.md").write_text(
            "# LocalBuilder vs WarmBuilder\n\n"
            f"{header}\n\n{table}\n\n"
            "Medians per builder:\n\n```json\n" + json.dumps(summary, indent=2) + "\n```\n\n"
            "Trials are tuning records in each run's database; failed trials have no valid "
            "run time. Build timeouts are counted from the builders' error messages.\n"
        )
        print(f"wrote {args.out / 'results.json'} and {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
