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
"""The arguments of ``ms-droplet``'s subcommands: argparse types and shared argument groups.

A new subcommand reuses these groups (``add_target_args``, ``add_measure_args``) so that every
command spells the target, runner, builder and RPC settings the same way; the values become a
target, runner and builder through :mod:`ms_droplet._factories`.
"""

from __future__ import annotations

import argparse

__all__ = [
    "DEFAULT_WORKLOAD",
    "add_bench_args",
    "add_measure_args",
    "add_target_args",
    "add_tune_args",
    "int_at_least",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "pvalue",
]

DEFAULT_WORKLOAD = "matmul:512,512,512"


def int_at_least(minimum: int):
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


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0 (seconds), got {text}")
    return value


def pvalue(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a p-value in (0, 1], got {value}")
    return value


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        default="host",
        help='"host" (this CPU with --num-cores) or a JSON target dict, e.g. '
        '\'{"kind": "llvm", "mcpu": "skylake", "num-cores": 4}\'',
    )
    p.add_argument("--num-cores", type=positive_int, default=None, help="cores (default: all)")


def add_measure_args(p: argparse.ArgumentParser, *, per_iter: int) -> None:
    p.add_argument("--pvalue", type=pvalue, default=0.05, help="droplet: significance level")
    p.add_argument(
        "--num-trials-per-iter",
        type=positive_int,
        default=per_iter,
        help=f"candidates measured per batch (default {per_iter}; droplet needs >= 2)",
    )
    p.add_argument("--number", type=positive_int, default=3, help="runner: runs per sample")
    p.add_argument("--repeat", type=positive_int, default=3, help="runner: samples")
    p.add_argument("--min-repeat-ms", type=non_negative_int, default=100, help="runner")
    p.add_argument(
        "--builder",
        choices=["warm", "local"],
        default="warm",
        help="warm: ms_droplet's WarmBuilder (workers kept across builds); local: TVM's "
        "LocalBuilder",
    )
    p.add_argument(
        "--builder-timeout", type=positive_float, default=60.0, help="seconds per candidate (> 0)"
    )
    rpc = p.add_argument_group("measuring on a fleet through TVM's RPC tracker")
    rpc.add_argument("--rpc-tracker", default=None, metavar="HOST:PORT", help="tracker address")
    rpc.add_argument("--rpc-key", default=None, help="device key the servers registered with")
    rpc.add_argument("--rpc-session-timeout", type=positive_int, default=60, help="seconds")
    rpc.add_argument("--rpc-priority", type=int, default=1, help="session priority")
    rpc.add_argument("--rpc-workers", type=positive_int, default=None, help="parallel sessions")
    p.add_argument("--verbose", action="store_true", help="also show MetaSchedule's DEBUG logs")
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=10,
        help="interleaved re-measurement rounds for the final comparison",
    )


def add_tune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workload",
        default=DEFAULT_WORKLOAD,
        help="NAME:INDEX of the Ansor suite (C2D:0, DEP:1, ...), matmul:M,N,K, "
        "conv2d:N,H,W,CI,CO,KERNEL,STRIDE,PAD, or a TVMScript .py file "
        f"(default: {DEFAULT_WORKLOAD})",
    )
    add_target_args(p)
    p.add_argument("--trials", type=positive_int, default=400, help="total trial budget")
    p.add_argument("--strategy", choices=["droplet", "evolutionary"], default="droplet")
    p.add_argument(
        "--num-evolutionary-trials",
        type=non_negative_int,
        default=200,
        help="droplet: trials explored by EvolutionarySearch before the descent (the "
        "strategy's own default is 300, as published; 200 keeps the Quick start short)",
    )
    p.add_argument("--work-dir", default=None, help="tuning directory (default: a new temp dir)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    add_measure_args(p, per_iter=64)


def add_bench_args(p: argparse.ArgumentParser) -> None:
    from .bench._config import STRATEGIES
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
        type=positive_int,
        default=None,
        help="B: droplet's total budget per workload (default: the suite's; quick: 64)",
    )
    p.add_argument(
        "--ratio",
        type=positive_int,
        default=None,
        help="K: evolutionary search gets K*B trials (default: the suite's; quick and "
        "paper-cpu: 5, small and plateau: 4)",
    )
    p.add_argument(
        "--num-evolutionary-trials",
        type=positive_int,
        default=None,
        help="N: trials explored before droplet's descent, and before TVM's post_optimization "
        "(default: the suite's; quick: 32)",
    )
    p.add_argument(
        "--seeds", type=non_negative_int, nargs="+", default=[0], help="tuning seeds (0 1 2)"
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        choices=list(STRATEGIES),
        default=None,
        help="which strategies to run (default: all three; with --rpc-tracker droplet and "
        "evolutionary, since TVM's post_optimization measures on this machine only)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=None,
        metavar="NAME=JSON",
        help="also run droplet-NAME, droplet with these DropletStrategy settings, for an "
        """ablation (repeatable), e.g. --variant 'norank={"rank_neighbours": false}'; """
        "the evolutionary runs of the folder are reused. A variant starts from droplet's "
        """explored trials; with "start_from": "evolutionary" it continues the evolutionary """
        "run's own trials instead (its first N, or up to where droplet's stagnation rule would "
        "switch), so droplet@B and evolutionary@B share their explored kernels",
    )
    add_target_args(p)
    add_measure_args(p, per_iter=32)
    p.add_argument(
        "--remeasure-again",
        action="store_true",
        help="re-measure every (workload, seed) whose runs are finished, even where a "
        "re-measurement exists (it is kept as seed<S>.json.bak-*): a new process's numbers, to "
        "see how far the paired ratios move between processes (the report's 'Between "
        "processes'); every invocation with it re-measures every finished pair again",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
