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
"""``ms-droplet tune`` on this machine: run_tuning, TuneReport and report.json."""

from __future__ import annotations

import json

import pytest
from tvm.s_tir import meta_schedule as ms

import ms_droplet
from ms_droplet._decisions import trace_key
from ms_droplet._intervals import paired_ratio
from ms_droplet._picks import picked_record
from ms_droplet._records import best_record, find_workload, latency
from ms_droplet._stats import median
from ms_droplet._tune import TuneReport, run_tuning
from ms_droplet._workloads import load_workload

from ._fakes import HashBuilder, LandscapeRunner
from ._helpers import run_cli

WORKLOAD = "matmul:32,32,32"


@pytest.mark.tuning
def test_cli_tune_locally_prints_and_writes_the_report(tmp_path, cli_warm_builder):
    code, out, err = run_cli(
        "tune",
        "--workload",
        WORKLOAD,
        "--trials",
        "16",
        "--num-evolutionary-trials",
        "8",
        "--num-trials-per-iter",
        "8",
        "--num-cores",
        "2",
        "--rounds",
        "2",
        "--min-repeat-ms",
        "5",
        "--work-dir",
        str(tmp_path),
    )
    assert code == 0, out[-3000:] + err[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    db = ms.database.JSONDatabase(work_dir=str(tmp_path))
    records = db.get_all_tuning_records()
    # Every trial is in the report's curve and in the database.
    assert report["workload"] == WORKLOAD and report["strategy"] == "droplet"
    assert report["trials"] == len(report["curve"]) == len(records) > 8
    assert report["explore_trials"] == 8
    assert report["flop"] == 2 * 32**3
    assert [p["trial"] for p in report["curve"]] == list(range(1, report["trials"] + 1))
    bests = [p["best_ms"] for p in report["curve"]]
    assert bests == sorted(bests, reverse=True)
    # The exploration's best is the curve after 8 trials; the final kernel is droplet's pick
    # (16 trials keep none for a final batch: the last incumbent), kept in droplet_picks.json,
    # never faster on record than the database's lowest record (what stock TVM compiles).
    assert report["explored_ms"] == pytest.approx(report["curve"][7]["best_ms"])
    workload = find_workload(db, load_workload(WORKLOAD))
    pick = picked_record(str(tmp_path), workload.mod)
    assert pick is not None, "no pick kept in droplet_picks.json"
    assert report["final_ms"] == pytest.approx(1e3 * latency(pick.run_secs))
    best = best_record(db, workload)
    assert report["final_ms"] >= 1e3 * latency(best.run_secs) == pytest.approx(bests[-1])
    answer = ms_droplet.tuned_database(str(tmp_path)).query_tuning_record(
        workload.mod, best.target, "main"
    )
    assert trace_key(answer.trace) == trace_key(pick.trace)
    # Both kernels were re-measured interleaved (rounds x repeat samples each), or one when the
    # final kernel is the exploration's best: then no speed-up is printed.
    explored_trace = next(
        r.trace
        for r in records
        if latency(r.run_secs) == pytest.approx(report["explored_ms"] / 1e3)
    )
    same = trace_key(explored_trace) == trace_key(pick.trace)
    assert report["same_kernel"] is same
    keys = ["final"] if same else ["after_exploration", "final"]
    assert list(report["remeasured"]) == keys
    assert all(len(v) == 2 * 3 for v in report["remeasured"].values())
    assert "best kernels re-measured interleaved (median of the rounds):" in out
    labels = {"after_exploration": "after exploration (8 trials)", "final": "final ("}
    for key in keys:
        row = next(line for line in out.splitlines() if line.strip().startswith(labels[key]))
        assert f"{median(report['remeasured'][key]) * 1e3:.4f} ms" in row
    if same:
        assert "same kernel: no speed-up to report" in out and "speed-up of" not in out
    else:
        paired = report["paired"]
        assert paired["rounds"] == 2 and paired["ci95"][0] <= paired["ratio"] <= paired["ci95"][1]
        speed_up = f"{1 / paired['ratio']:.3f}x (95 % CI {1 / paired['ci95'][1]:.3f}-"
        assert f"speed-up of the final kernel over the exploration best: {speed_up}" in out
        aa = report["aa"]  # the exploration best timed a second time in the same rounds
        assert aa["rounds"] == 2 and aa["ci95"][0] <= aa["ratio"] <= aa["ci95"][1]
        assert f"A/A control (the exploration best timed twice): {1 / aa['ratio']:.3f}x" in out


def test_exploration_best_is_taken_before_an_early_switch(tmp_path, matmul64, target):
    # stagnation_trials=1 ends the exploration at the first batch whose last trial gains
    # nothing, long before num_evolutionary_trials (48): the report's "after exploration" is
    # the best of the trials before that switch, not of the first 48 (descent trials included).
    strategy = ms_droplet.DropletStrategy(
        num_evolutionary_trials=48, stagnation_trials=1, final_trials=0
    )
    report = run_tuning(
        matmul64,
        target,
        str(tmp_path),
        trials=64,
        num_trials_per_iter=16,
        strategy=strategy,
        runner=LandscapeRunner(),
        builder=HashBuilder(artifact_root=str(tmp_path / "artifacts")),
        explore_trials=48,
        rounds=2,
        min_repeat_ms=1,
    )
    (summary,) = strategy.summaries
    switch = summary["explored_trials"]
    assert summary["descents"] >= 1 and switch is not None and 16 <= switch < 48
    assert report.explore_trials == switch
    assert report.explored_ms == pytest.approx(report.curve[switch - 1]["best_ms"])
    text = report.format(wall_seconds=1.0)
    # (the default cost model's warm-up scores are numpy's unseeded random numbers, so the
    # descent may or may not beat the exploration's best in this tuning)
    if report.same_kernel:
        assert "same kernel: no speed-up to report" in text
    else:
        assert f"after exploration ({switch} trials)" in text


def _report(**changes) -> TuneReport:
    """A TuneReport of a 12-trial run (8 explored) at 2 ms after exploration."""
    settings = dict(
        workload="matmul:8,8,8",
        target="znver4",
        strategy="droplet",
        trials=12,
        build_errors=0,
        build_timeouts=0,
        tuning_seconds=3.0,
        flop=2e6,
        explore_trials=8,
        explored_ms=2.0,
    )
    return TuneReport(**{**settings, **changes})


def test_report_says_same_kernel_instead_of_a_speed_up():
    report = _report(final_ms=2.0, remeasured={"final": [2e-3, 2.1e-3]}, same_kernel=True)
    text = report.format(wall_seconds=4.0)
    assert "same kernel: no speed-up to report" in text and "speed-up of" not in text
    assert "after exploration" not in text and "final (12 trials)" in text


def test_report_gives_the_speed_up_with_its_interval_and_says_when_it_is_noise():
    # final 10 % faster in every one of 4 rounds (2 samples a round): a real speed-up
    explored = [2.0e-3, 2.02e-3, 2.1e-3, 2.08e-3, 1.98e-3, 2.0e-3, 2.2e-3, 2.18e-3]
    faster = [x * 0.9 for x in explored]
    paired = paired_ratio(faster, explored, 4)
    report = _report(remeasured={"after_exploration": explored, "final": faster}, paired=paired)
    text = report.format(wall_seconds=4.0)
    line = next(x for x in text.splitlines() if "speed-up of the final kernel" in x)
    assert "1.111x (95 % CI" in line and "over 4 rounds" in line
    assert "noise" not in line
    assert "A/A" not in text  # no control timed: none shown
    report.aa = paired_ratio(explored[::-1], explored, 4)
    assert "A/A control (the exploration best timed twice): " in report.format(wall_seconds=4.0)
    # the final kernel faster in two rounds and slower in two: the interval contains 1
    factors = [0.9, 0.9, 1.1, 1.1, 0.95, 0.95, 1.05, 1.05]
    mixed = [x * f for x, f in zip(explored, factors, strict=True)]
    report = _report(
        remeasured={"after_exploration": explored, "final": mixed},
        paired=paired_ratio(mixed, explored, 4),
    )
    line = next(x for x in report.format(wall_seconds=4.0).splitlines() if "speed-up" in x)
    assert "the interval contains 1: no difference beyond the noise" in line


def test_report_without_remeasurement_shows_the_recorded_latencies():
    report = _report(build_errors=1, build_timeouts=1, final_ms=1.0)
    text = report.format(wall_seconds=4.0)
    assert "trials: 12 (1 build errors, 1 timeouts)" in text
    assert "best kernels as recorded by the runner (not re-measured here):" in text
    assert "after exploration (8 trials)" in text and "final (12 trials)" in text
    assert "1.00 GFLOP/s" in text and "2.00 GFLOP/s" in text  # 2e6 flop in 2 ms and in 1 ms
    assert "speed-up" not in text
