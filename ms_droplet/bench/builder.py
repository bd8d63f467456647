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
"""Compare TVM's ``LocalBuilder`` with :class:`~ms_droplet._builder.WarmBuilder` by tuning.

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
import os
import platform
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
from tvm.s_tir.meta_schedule.testing import te_workload
from tvm.s_tir.meta_schedule.utils import cpu_count

from ms_droplet._builder import WarmBuilder

BUILDERS = {"L": "LocalBuilder", "W": "WarmBuilder"}
#: MetaSchedule stores this run time for candidates that failed to build or run.
FAILED_RUN_SECS = 1e9


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


def parse_workload(spec: str) -> tuple[str, tuple[int, int, int]]:
    """Parse ``matmul:M,N,K``.

    Parameters
    ----------
    spec : str
        The workload specification.

    Returns
    -------
    workload : Tuple[str, Tuple[int, int, int]]
        The kind and the sizes.
    """
    kind, _, sizes = spec.partition(":")
    if kind != "matmul":
        raise argparse.ArgumentTypeError(f"unsupported workload {kind!r}; use matmul:M,N,K")
    try:
        m, n, k = (int(x) for x in sizes.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad sizes in {spec!r}; use matmul:M,N,K") from None
    if min(m, n, k) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive in {spec!r}")
    return kind, (m, n, k)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def cpu_model() -> str:
    """The CPU model name, as far as it can be found."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mean_run_secs(record: ms.database.TuningRecord) -> float | None:
    if record.run_secs is None or len(record.run_secs) == 0:
        return None
    secs = [float(getattr(x, "value", x)) for x in record.run_secs]
    mean = sum(secs) / len(secs)
    return None if mean >= FAILED_RUN_SECS else mean


def tune_once(
    key: str,
    round_index: int,
    args: argparse.Namespace,
    target: tvm.target.Target,
    work_dir: Path,
) -> dict[str, Any]:
    """Tune the workload once with the builder named by `key` and return the raw numbers."""
    _, (m, n, k) = args.workload
    mod = tvm.IRModule({"main": tvm.te.create_prim_func(te_workload.matmul(m, n, k))})
    start = time.perf_counter()
    if key == "L":
        inner = ms.builder.LocalBuilder(
            max_workers=args.max_workers, timeout_sec=args.builder_timeout
        )
    else:
        inner = WarmBuilder(max_workers=args.max_workers, timeout_sec=args.builder_timeout)
    builder = CountingBuilder(inner)
    try:
        database = ms.tune_tir(
            mod,
            target,
            str(work_dir),
            max_trials_global=args.trials,
            num_trials_per_iter=args.trials_per_iter,
            builder=builder,
            runner=ms.runner.LocalRunner(),
            seed=args.seed,
            strategy="evolutionary",
        )
    finally:
        if key == "W":
            inner.shutdown()
    wall = time.perf_counter() - start
    latencies = [_mean_run_secs(r) for r in database.get_all_tuning_records()]
    valid = [x for x in latencies if x is not None]
    best = min(valid) if valid else None
    return {
        "round": round_index,
        "builder": BUILDERS[key],
        "wall_s": wall,
        "build_s": builder.seconds,
        "build_calls": builder.calls,
        "candidates_built": builder.candidates,
        "build_failures": builder.failures,
        "build_timeouts": builder.timeouts,
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
    parser.add_argument("--trials", type=_positive_int, default=128, help="max_trials_global")
    parser.add_argument(
        "--trials-per-iter", type=_positive_int, default=64, help="num_trials_per_iter"
    )
    parser.add_argument(
        "--workload",
        type=parse_workload,
        default=parse_workload("matmul:512,512,512"),
        metavar="matmul:M,N,K",
        help="float32 matmul C[M,N] = A[M,K] B[K,N] (default: matmul:512,512,512)",
    )
    parser.add_argument("--seed", type=int, default=0, help="tuning seed (default: 0)")
    parser.add_argument(
        "--rounds", type=_positive_int, default=1, help="runs per builder, interleaved"
    )
    parser.add_argument(
        "--builder-timeout",
        type=_positive_float,
        default=30.0,
        help="per-build timeout in seconds of both builders (default: 30, TVM's default)",
    )
    parser.add_argument(
        "--max-workers",
        type=_positive_int,
        default=None,
        help="build processes of both builders (default: number of logical CPUs)",
    )
    parser.add_argument(
        "--num-cores",
        type=_positive_int,
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
    num_cores = args.num_cores or cpu_count(logical=True)
    target = tvm.target.Target(
        {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": num_cores}
    )
    command = shlex.join([sys.executable, "-m", "ms_droplet.bench.builder", *argv])
    _, (m, n, k) = args.workload
    info = {
        "command": command,
        "tvm_version": tvm.__version__,
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "target": str(target),
        "workload": f"matmul:{m},{n},{k} float32",
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
                run = tune_once(key, round_index, args, target, work_dir)
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
