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
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence

from ._cli_args import add_bench_args, add_measure_args, add_target_args, add_tune_args
from ._files import ensure_writable_dir
from ._lock import WorkDirLocked, lock_work_dir

__all__ = ["build_parser", "main"]


def _target(args: argparse.Namespace):
    """The target of ``--target`` / ``--num-cores``; None (after printing why) when invalid."""
    from ._factories import parse_target

    try:
        return parse_target(args.target, args.num_cores)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def _parse_target(spec: str, num_cores: int | None):
    """``parse_target`` imported on first use (TVM loads only for commands that need it)."""
    from ._factories import parse_target

    return parse_target(spec, num_cores)


def _runner_factory(args: argparse.Namespace):
    """(make_runner, open_session) from the runner and RPC arguments (ValueError if invalid)."""
    from ._factories import runner_factory

    return runner_factory(
        number=args.number,
        repeat=args.repeat,
        min_repeat_ms=args.min_repeat_ms,
        rpc_tracker=args.rpc_tracker,
        rpc_key=args.rpc_key,
        session_timeout_sec=args.rpc_session_timeout,
        session_priority=args.rpc_priority,
        max_workers=args.rpc_workers,
    )


_PER_ITER_ERROR = (
    "error: --num-trials-per-iter {n} leaves no room for droplet's descent, which measures "
    "the incumbent beside at least one neighbour in every batch; use --num-trials-per-iter 2 "
    "or more (the default is fine), or --strategy evolutionary"
)


def cmd_tune(args: argparse.Namespace) -> int:
    """Tune one workload and print the result."""
    from ._workloads import load_workload

    if args.strategy == "droplet" and args.num_trials_per_iter < 2:
        print(_PER_ITER_ERROR.format(n=args.num_trials_per_iter), file=sys.stderr)
        return 2
    try:
        mod = load_workload(args.workload)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = _target(args)
    if target is None:
        return 2
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="ms_droplet_")
    try:
        ensure_writable_dir(work_dir)
    except OSError as err:
        print(f"error: --work-dir {work_dir!r} is not writable: {err}", file=sys.stderr)
        return 2
    try:
        lock = lock_work_dir(
            work_dir,
            owner="ms-droplet tune",
            fix="two tunings in one work dir would mix their records; wait for it to finish, "
            "or give another --work-dir",
        )
    except WorkDirLocked as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    with lock:
        return _tune_locked(args, mod, target, work_dir)


def _tune_locked(args: argparse.Namespace, mod, target, work_dir: str) -> int:
    """The rest of ``cmd_tune``, holding the work dir's lock."""
    from . import DropletStrategy
    from ._tune import TuneReport, run_tuning

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
    from ._factories import make_builder
    from .bench._config import STRATEGIES, VARIANT_PREFIX, BenchConfig, BenchError, parse_variant
    from .bench._driver import run_bench
    from .bench._report import build_report
    from .bench._suites import SUITES

    if not args.suite and not args.workload:
        print("error: give --suite quick|paper-cpu or at least one --workload", file=sys.stderr)
        return 2
    suite = SUITES[args.suite or "quick"]
    try:
        variants = tuple(parse_variant(v) for v in args.variant or ())
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    strategies = args.strategies or list(STRATEGIES)
    if variants and not args.strategies:
        strategies = ["droplet", "evolutionary"]  # an ablation compares variants with these
    strategies = [*strategies, *(VARIANT_PREFIX + name for name, _ in variants)]
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
    if any(s.startswith("droplet") for s in strategies) and args.num_trials_per_iter < 2:
        print(_PER_ITER_ERROR.format(n=args.num_trials_per_iter), file=sys.stderr)
        return 2
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        print(
            f"error: --out {args.out!r} is a file; give a folder (new, or one of an earlier "
            "`ms-droplet bench` to resume it)",
            file=sys.stderr,
        )
        return 2
    try:
        config = BenchConfig(
            workloads=tuple(args.workload or suite.workloads),
            seeds=tuple(dict.fromkeys(args.seeds)),
            trials=args.trials or suite.trials,
            ratio=args.ratio or suite.ratio,
            num_evolutionary_trials=args.num_evolutionary_trials or suite.num_evolutionary_trials,
            strategies=tuple(dict.fromkeys(strategies)),
            num_trials_per_iter=args.num_trials_per_iter,
            pvalue=args.pvalue,
            number=args.number,
            repeat=args.repeat,
            min_repeat_ms=args.min_repeat_ms,
            rounds=args.rounds,
            variants=variants,
        )
        make_runner, open_session = _runner_factory(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = _target(args)
    if target is None:
        return 2
    builder, owned = make_builder(args.builder, args.builder_timeout)
    command = "ms-droplet " + " ".join(shlex.quote(a) for a in args.argv)
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
            remeasure_again=args.remeasure_again,
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
    if all(p.droppable for p in problems):
        print(
            "drop those lines (they hold no record; a backup is kept) with:\n"
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
            print(
                "database OK"
                if not problems
                else f"{len(problems)} line(s) TVM cannot load"
                + (
                    f"; drop them with `ms-droplet db repair {args.work_dir}`"
                    if all(p.droppable for p in problems)
                    else ""
                )
            )
            return 1 if problems else 0
        backups = repair_database(args.work_dir)
    except (FileNotFoundError, ValueError, WorkDirLocked) as err:
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
    # The subcommands, one block each: add_parser, its arguments (shared groups in _cli_args) and
    # set_defaults(func=cmd_<name>). A new command is registered here (docs/architecture.md).
    sub = parser.add_subparsers(dest="command", required=True)
    tune = sub.add_parser(
        "tune",
        help="tune one workload and print latency, GFLOP/s, trials and wall time",
        description="Tune one workload with droplet (evolutionary exploration, then Droplet "
        "descent) or plain evolutionary search, then re-measure the best kernel after "
        "exploration and after the descent, interleaved.",
    )
    add_tune_args(tune)
    tune.set_defaults(func=cmd_tune)
    from . import _cli_tune_model

    tune_model = sub.add_parser(
        "tune-model", help=_cli_tune_model.HELP, description=_cli_tune_model.DESCRIPTION
    )
    add_target_args(tune_model)
    add_measure_args(tune_model, per_iter=64)
    _cli_tune_model.add_arguments(tune_model)
    tune_model.set_defaults(
        func=functools.partial(
            _cli_tune_model.run, make_target=_parse_target, runner_factory=_runner_factory
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
    add_bench_args(bench)
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
        description="check: list the lines of WORK_DIR's database files that TVM cannot load "
        "(cut-off, blank, or valid JSON of the wrong shape), with the fix; exit code 1 if any. "
        "repair: drop blank lines and a truncated last line (left by a crash mid-write) after "
        "writing a .bak copy, atomically and holding the work dir's lock; other broken lines are "
        "reported and never dropped.",
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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given, for the records (bench.json)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
