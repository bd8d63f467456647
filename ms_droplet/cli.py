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
"""The ``ms-droplet`` command line."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence

__all__ = ["main"]

DEFAULT_WORKLOAD = "matmul:512,512,512"


def _int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _pvalue(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a p-value in (0, 1], got {value}")
    return value


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default="host",
        help='"host" (this CPU with --num-cores) or a JSON target dict, e.g. '
        '\'{"kind": "llvm", "mcpu": "skylake", "num-cores": 4}\'',
    )
    p.add_argument("--num-cores", type=_positive_int, default=None, help="cores (default: all)")


def _add_measure_args(p: argparse.ArgumentParser, *, per_iter: int) -> None:
    p.add_argument("--pvalue", type=_pvalue, default=0.05, help="droplet: significance level")
    p.add_argument("--num-trials-per-iter", type=_positive_int, default=per_iter)
    p.add_argument("--number", type=_positive_int, default=3, help="runner: runs per sample")
    p.add_argument("--repeat", type=_positive_int, default=3, help="runner: samples")
    p.add_argument("--min-repeat-ms", type=_non_negative_int, default=100, help="runner")
    p.add_argument(
        "--builder",
        choices=["warm", "local"],
        default="warm",
        help="warm: ms_droplet's WarmBuilder (workers kept across builds); local: TVM's "
        "LocalBuilder",
    )
    p.add_argument("--builder-timeout", type=float, default=60.0, help="seconds per candidate")
    rpc = p.add_argument_group("measuring on a fleet through TVM's RPC tracker")
    rpc.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT", help="tracker address")
    rpc.add_argument("--rpc-key", default=None, help="device key the servers registered with")
    rpc.add_argument("--rpc-session-timeout", type=_positive_int, default=60, help="seconds")
    rpc.add_argument("--rpc-priority", type=int, default=1, help="session priority")
    rpc.add_argument("--rpc-workers", type=_positive_int, default=None, help="parallel sessions")
    p.add_argument("--verbose", action="store_true", help="also show MetaSchedule's DEBUG logs")
    p.add_argument(
        "--rounds",
        type=_positive_int,
        default=10,
        help="interleaved re-measurement rounds for the final comparison",
    )


def _add_tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workload",
        default=DEFAULT_WORKLOAD,
        help="NAME:INDEX of the Ansor suite (C2D:0, DEP:1, ...), matmul:M,N,K, "
        "conv2d:N,H,W,CI,CO,KERNEL,STRIDE,PAD, or a TVMScript .py file "
        f"(default: {DEFAULT_WORKLOAD})",
    )
    _add_target_args(p)
    p.add_argument("--trials", type=_positive_int, default=400, help="total trial budget")
    p.add_argument("--strategy", choices=["droplet", "evolutionary"], default="droplet")
    p.add_argument(
        "--num-evolutionary-trials",
        type=_non_negative_int,
        default=200,
        help="droplet: trials explored by EvolutionarySearch before the descent (the "
        "strategy's own default is 300, as published; 200 keeps the Quick start short)",
    )
    p.add_argument("--work-dir", default=None, help="tuning directory (default: a new temp dir)")
    p.add_argument("--seed", type=_non_negative_int, default=0)
    _add_measure_args(p, per_iter=64)


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    from .bench._layout import STRATEGIES
    from .bench._suites import SUITES

    p.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default=None,
        help="; ".join(f"{s.name}: {s.about}" for s in SUITES.values()),
    )
    p.add_argument(
        "--workload",
        action="append",
        default=None,
        help="a workload (as for `tune`); repeat it for an ad-hoc suite (replaces --suite's list)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="the benchmark folder")
    p.add_argument(
        "--trials",
        type=_positive_int,
        default=None,
        help="B: droplet's total budget per workload (default: the suite's; quick: 64)",
    )
    p.add_argument(
        "--ratio",
        type=_positive_int,
        default=5,
        help="K: evolutionary search gets K*B trials (default 5)",
    )
    p.add_argument(
        "--num-evolutionary-trials",
        type=_positive_int,
        default=None,
        help="N: trials explored before droplet's descent, and before TVM's post_optimization "
        "(default: the suite's; quick: 32)",
    )
    p.add_argument(
        "--seeds", type=_non_negative_int, nargs="+", default=[0], help="tuning seeds (0 1 2)"
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        choices=list(STRATEGIES),
        default=None,
        help="which strategies to run (default: all three; with --rpc-tracker droplet and "
        "evolutionary, since TVM's post_optimization measures on this machine only)",
    )
    _add_target_args(p)
    _add_measure_args(p, per_iter=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _tracker_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SystemExit(
            f"error: --rpc-tracker must be HOST:PORT, e.g. 127.0.0.1:9190, got {text!r}"
        )
    return host, int(port)


def _make_target(spec: str, num_cores: int | None):
    import tvm

    if num_cores is None:
        num_cores = os.cpu_count() or 1
    if spec == "host":
        return tvm.target.Target(
            {
                "kind": "llvm",
                "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
                "num-cores": num_cores,
            }
        )
    try:
        config = json.loads(spec)
    except json.JSONDecodeError:
        raise SystemExit(
            f"error: --target must be 'host' or a JSON dict like "
            f'\'{{"kind": "llvm", "num-cores": 2}}\', got {spec!r}'
        ) from None
    if not isinstance(config, dict):
        raise SystemExit(f"error: --target must be a JSON object, got {spec!r}")
    try:
        target = tvm.target.Target(config)
    except Exception as err:  # TVM raises several error types for bad targets
        raise SystemExit(f"error: invalid --target {spec!r}: {err}") from None
    if target.kind.name == "llvm" and "num-cores" not in config:
        raise SystemExit('error: a CPU --target needs "num-cores" (MetaSchedule requires it)')
    if target.kind.name not in ("llvm", "c"):
        raise SystemExit(
            f"error: target kind {target.kind.name!r} cannot be measured on this machine "
            "without an RPC runner; use an llvm target"
        )
    return target


def _runner_factory(args: argparse.Namespace):
    """(make_runner, open_session) from the runner and RPC arguments.

    ``open_session`` opens a session on a device of the tracker (for re-measuring there), or is
    None when measuring on this machine.
    """
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(
        number=args.number,
        repeat=args.repeat,
        min_repeat_ms=args.min_repeat_ms,
        enable_cpu_cache_flush=False,
    )
    if not args.rpc_tracker:
        return (lambda: ms.runner.LocalRunner(evaluator_config=evaluator)), None
    host, port = _tracker_address(args.rpc_tracker)
    if not args.rpc_key:
        raise ValueError("--rpc-tracker needs --rpc-key (the servers' --key)")
    config = ms.runner.RPCConfig(
        tracker_host=host,
        tracker_port=port,
        tracker_key=args.rpc_key,
        session_timeout_sec=args.rpc_session_timeout,
        session_priority=args.rpc_priority,
    )

    def make_runner():
        return ms.runner.RPCRunner(
            rpc_config=config, evaluator_config=evaluator, max_workers=args.rpc_workers
        )

    return make_runner, config.connect_server


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune one workload and print the result."""

    from . import DropletStrategy
    from ._report import TuneReport, run_tuning
    from ._workloads import load_workload

    try:
        mod = load_workload(args.workload)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = _make_target(args.target, args.num_cores)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ms_droplet_")
    try:
        os.makedirs(work_dir, exist_ok=True)
        probe = os.path.join(work_dir, ".write_test")
        with open(probe, "w", encoding="utf-8"):
            pass
        os.remove(probe)
    except OSError as err:
        print(f"error: --work-dir {work_dir!r} is not writable: {err}", file=sys.stderr)
        return 2
    if not _database_ok(work_dir):
        return 2
    if args.strategy == "droplet":
        strategy = DropletStrategy(
            num_evolutionary_trials=args.num_evolutionary_trials, pvalue=args.pvalue
        )
        explore = args.num_evolutionary_trials
    else:
        strategy = "evolutionary"
        explore = args.trials
    try:
        make_runner, open_session = _runner_factory(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    runner = make_runner()
    print(
        f"ms-droplet tune: {args.workload} on {target.attrs.get('mcpu', target.kind.name)} "
        f"({int(target.attrs.get('num-cores', 1))} cores), strategy={args.strategy}, "
        f"trials={args.trials}, work_dir={work_dir}",
        flush=True,
    )
    if not args.verbose:
        # MetaSchedule's console handler takes this logger's level: INFO shows the task
        # scheduler's table (the progress display) without the cost model's DEBUG lines.
        logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.INFO)
    start = time.perf_counter()
    report: TuneReport = run_tuning(
        mod,
        target,
        work_dir,
        trials=args.trials,
        num_trials_per_iter=args.num_trials_per_iter,
        strategy=strategy,
        runner=runner,
        builder=args.builder,
        builder_timeout=args.builder_timeout,
        seed=args.seed,
        explore_trials=explore,
        rounds=args.rounds,
        workload_name=args.workload,
        open_session=open_session,
        number=args.number,
        repeat=args.repeat,
        min_repeat_ms=args.min_repeat_ms,
    )
    wall = time.perf_counter() - start
    print(report.format(wall_seconds=wall))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run (or resume) the strategy comparison of DESIGN.md into ``--out``."""
    from .bench._driver import BenchConfig, BenchError, run_bench
    from .bench._layout import STRATEGIES
    from .bench._report import build_report
    from .bench._suites import SUITES

    if not args.suite and not args.workload:
        print("error: give --suite quick|paper-cpu or at least one --workload", file=sys.stderr)
        return 2
    suite = SUITES[args.suite or "quick"]
    strategies = args.strategies or list(STRATEGIES)
    if args.rpc_tracker and "post_opt" in strategies:
        if args.strategies:
            print(
                "error: TVM's post_optimization builds and measures with a LocalBuilder and "
                "LocalRunner of its own, on this machine, so it cannot run on an RPC fleet; "
                "use --strategies droplet evolutionary with --rpc-tracker",
                file=sys.stderr,
            )
            return 2
        strategies.remove("post_opt")
    try:
        config = BenchConfig(
            workloads=tuple(args.workload or suite.workloads),
            seeds=tuple(dict.fromkeys(args.seeds)),
            trials=args.trials or suite.trials,
            ratio=args.ratio,
            num_evolutionary_trials=args.num_evolutionary_trials or suite.num_evolutionary_trials,
            strategies=tuple(dict.fromkeys(strategies)),
            num_trials_per_iter=args.num_trials_per_iter,
            pvalue=args.pvalue,
            number=args.number,
            repeat=args.repeat,
            min_repeat_ms=args.min_repeat_ms,
            rounds=args.rounds,
        )
        make_runner, open_session = _runner_factory(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = _make_target(args.target, args.num_cores)
    from ._report import _builder

    builder, owned = _builder(args.builder, args.builder_timeout)
    command = "ms-droplet " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    start = time.perf_counter()
    try:
        counts = run_bench(
            args.out,
            config,
            target=target,
            builder=builder,
            make_runner=make_runner,
            open_session=open_session,
            command=command,
            progress=not args.no_progress,
            # The progress bar is the display; MetaSchedule's tables stay in the run's logs/.
            console_level=None if args.verbose else logging.WARNING,
        )
    except (BenchError, ValueError) as err:  # ValueError: an unreadable stored file
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if owned:
            builder.shutdown()
    try:
        markdown, _ = build_report(args.out)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown)
    print(
        f"{counts['ran']} runs tuned, {counts['skipped']} found finished, "
        f"{counts['remeasured']} re-measured in {time.perf_counter() - start:.0f} s; "
        f"report: {os.path.join(args.out, 'report.md')}; plots: ms-droplet plot {args.out}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Print (and write) the tables of a benchmark folder."""
    from .bench._report import build_report

    try:
        markdown, _ = build_report(args.dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown)
    print(f"wrote {os.path.join(args.dir, 'report.md')} and summary.json")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """Draw the tuning curves of a benchmark folder."""
    from .bench._plot import plot_bench

    try:
        paths = plot_bench(args.dir, dest=args.dest)
    except (FileNotFoundError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    if not paths:
        print("no runs to plot yet")
    return 0


def _database_ok(work_dir: str) -> bool:
    from ._database import check_database

    problems = check_database(work_dir)
    if not problems:
        return True
    for prob in problems:
        print(f"error: unreadable database record: {prob}", file=sys.stderr)
    if all(p.is_last_line for p in problems):
        print(
            "a crash left a truncated last line; drop it (a backup is kept) with:\n"
            f"  ms-droplet db repair {work_dir}",
            file=sys.stderr,
        )
    return False


def cmd_db(args: argparse.Namespace) -> int:
    """Check or repair a JSON database."""
    from ._database import check_database, repair_database

    try:
        if args.action == "check":
            problems = check_database(args.work_dir)
            for prob in problems:
                print(prob)
            print("database OK" if not problems else f"{len(problems)} unreadable line(s)")
            return 1 if problems else 0
        backups = repair_database(args.work_dir)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for backup in backups:
        print(f"repaired; the original is kept as {backup}")
    if not backups:
        print("nothing to repair")
    return 0


def cmd_upstream_patch(args: argparse.Namespace) -> int:
    """Write the patch that makes droplet a built-in strategy of an apache/tvm checkout."""
    from ._upstream import UpstreamError, write_patch

    try:
        files = write_patch(args.tvm_source, args.out)
    except (UpstreamError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for f in files:
        print(f"{'new' if f.old is None else 'mod'}  {f.path}")
    print(
        f"wrote {args.out} ({len(files)} files); apply it in {args.tvm_source} with "
        f"`git am --keep-non-patch {os.path.abspath(args.out)}` (or `git apply`)"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``ms-droplet``."""
    parser = argparse.ArgumentParser(
        prog="ms-droplet",
        description="Droplet Search for TVM MetaSchedule: tune kernels, benchmark strategies.",
    )
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"ms_droplet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    tune = sub.add_parser(
        "tune",
        help="tune one workload and print latency, GFLOP/s, trials and wall time",
        description="Tune one workload with droplet (evolutionary exploration, then Droplet "
        "descent) or plain evolutionary search, then re-measure the best kernel after "
        "exploration and after the descent, interleaved.",
    )
    _add_tune_args(tune)
    tune.set_defaults(func=cmd_tune)
    from . import _cli_tune_model

    tune_model = sub.add_parser(
        "tune-model", help=_cli_tune_model.HELP, description=_cli_tune_model.DESCRIPTION
    )
    _add_target_args(tune_model)
    _add_measure_args(tune_model, per_iter=64)
    _cli_tune_model.add_arguments(tune_model)
    tune_model.set_defaults(
        func=functools.partial(
            _cli_tune_model.run, make_target=_make_target, runner_factory=_runner_factory
        )
    )
    bench = sub.add_parser(
        "bench",
        help="compare droplet, evolutionary (K x the budget) and TVM's post_optimization",
        description="Run the benchmark protocol: on each workload and seed, droplet with a "
        "budget B (N explored, then the descent), evolutionary search with K*B, and TVM's own "
        "post_optimization (N explored, then its Droplet for up to B-N); one work dir per run "
        "under --out; finished runs are skipped and interrupted ones resume when the command is "
        "run again; then each strategy's best kernel is re-measured interleaved in one process. "
        "Prints the report at the end (also `ms-droplet report DIR`).",
    )
    _add_bench_args(bench)
    bench.set_defaults(func=cmd_bench)
    report = sub.add_parser(
        "report",
        help="tables and a JSON summary of a benchmark folder (no tuning)",
        description="Rebuild from DIR's stored results: a markdown table per workload, the "
        "summary with geometric means of the latency and tuning-time ratios, written to "
        "DIR/report.md and DIR/summary.json (with TVM version, target, CPU, seeds, commands).",
    )
    report.add_argument("dir", help="the --out folder of `ms-droplet bench`")
    report.set_defaults(func=cmd_report)
    plot = sub.add_parser(
        "plot",
        help="PNG tuning curves of a benchmark folder",
        description="One PNG per workload: best latency vs trials and vs tuning time, a line "
        "per strategy (median over seeds, band min..max). Needs matplotlib "
        "(pip install 'ms_droplet[plot]').",
    )
    plot.add_argument("dir", help="the --out folder of `ms-droplet bench`")
    plot.add_argument("--dest", default=None, help="where to write the PNGs (default: DIR/plots)")
    plot.set_defaults(func=cmd_plot)
    db = sub.add_parser(
        "db",
        help="check or repair a MetaSchedule JSON database",
        description="check: list unreadable lines of WORK_DIR's database files. repair: drop a "
        "truncated last line (left by a crash mid-write) after writing a .bak copy; broken lines "
        "elsewhere are reported and never dropped.",
    )
    db.add_argument("action", choices=["check", "repair"])
    db.add_argument("work_dir", help="the tuning work dir holding database_*.json")
    db.set_defaults(func=cmd_db)
    upstream = sub.add_parser(
        "upstream-patch",
        help="write the apache/tvm patch that makes droplet a built-in MetaSchedule strategy",
        description="Generate, from this package's code, a git format-patch style patch against "
        "an apache/tvm checkout (v0.27 layout): search_strategy/droplet.py and its helper "
        'modules, "droplet" in SearchStrategy.create, and a test file.',
    )
    upstream.add_argument(
        "--tvm-source", required=True, metavar="DIR", help="the apache/tvm checkout (its root)"
    )
    upstream.add_argument("--out", required=True, metavar="FILE", help="the patch file to write")
    upstream.set_defaults(func=cmd_upstream_patch)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ms-droplet``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
