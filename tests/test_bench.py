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
"""``ms-droplet bench / report / plot``: bad input, the report's arithmetic, a real tiny bench."""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from tvm.s_tir import meta_schedule as ms

from ms_droplet import cli
from ms_droplet._stats import median
from ms_droplet.bench._config import (
    AA_CONTROL,
    EVOLUTIONARY_AT_B,
    STRATEGIES,
    BenchConfig,
    BenchError,
    parse_variant,
)
from ms_droplet.bench._driver import cost_model_with_warmup
from ms_droplet.bench._exploration_copy import exploration_length, switch_point
from ms_droplet.bench._layout import read_trials, remeasure_path, run_dir
from ms_droplet.bench._report import build_report
from ms_droplet.bench._suites import SUITES

from ._helpers import BENCH_ARGS, WORKLOAD, run_cli, use_builder_for_warm

# ----------------------------------------------------------------------------------------------
# bad input


def _run_cli(capsys, *argv):
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def test_bench_needs_a_suite_or_workloads(capsys, tmp_path):
    code, err = _run_cli(capsys, "bench", "--out", str(tmp_path / "b"))
    assert code == 2 and "--suite" in err and "--workload" in err
    assert not (tmp_path / "b").exists()


def test_bench_rejects_exploration_not_below_budget(capsys, tmp_path):
    code, err = _run_cli(
        capsys,
        "bench",
        "--suite",
        "quick",
        "--trials",
        "10",
        "--num-evolutionary-trials",
        "10",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "num_evolutionary_trials (10)" in err and "--trials (10)" in err


def test_bench_rejects_unknown_workload_before_tuning(capsys, tmp_path):
    code, err = _run_cli(
        capsys,
        "bench",
        "--workload",
        "matmul:8,8,8",
        "--workload",
        "XYZ:0",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "unknown workload 'XYZ:0'" in err
    assert not (tmp_path / "b" / "runs").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["--strategies", "droplet", "random"],
        ["--seeds", "-1"],
        ["--ratio", "0"],
        ["--suite", "huge"],
    ],
)
def test_bench_argument_errors(capsys, tmp_path, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--out", str(tmp_path), *argv])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(("suite", "ratio"), [("small", 4), ("plateau", 4), ("quick", 5)])
def test_suite_sets_the_ratio_unless_given(capsys, tmp_path, suite, ratio):
    # A folder of the suite's settings with another K is refused, naming the suite's own K
    # (the check runs before any tuning): without --ratio the suite's K is used.
    defaults = SUITES[suite]
    stored = BenchConfig(
        workloads=defaults.workloads,
        seeds=(0,),
        trials=defaults.trials,
        ratio=ratio + 1,
        num_evolutionary_trials=defaults.num_evolutionary_trials,
    )
    out = tmp_path / "b"
    out.mkdir()
    settings = {**asdict(stored), "target": "llvm -mcpu=elsewhere"}
    (out / "bench.json").write_text(json.dumps(settings))
    argv = ["bench", "--suite", suite, "--builder", "local", "--out", str(out)]
    code, err = _run_cli(capsys, *argv)
    assert code == 2 and f"ratio: {ratio + 1} there, {ratio} now" in err, err
    code, err = _run_cli(capsys, *argv, "--ratio", str(ratio + 1))
    assert code == 2 and "ratio:" not in err and "target:" in err, err


def test_rpc_tracker_without_key_is_rejected(capsys, tmp_path):
    code, err = _run_cli(
        capsys,
        "bench",
        "--suite",
        "quick",
        "--rpc-tracker",
        "127.0.0.1:9190",
        "--out",
        str(tmp_path / "b"),
    )
    assert code == 2 and "--rpc-key" in err


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_need_a_bench_folder(capsys, tmp_path, command):
    code, err = _run_cli(capsys, command, str(tmp_path))
    assert code == 2 and "no bench.json" in err and "ms-droplet bench" in err


def test_config_validation():
    with pytest.raises(BenchError, match="unknown strategies"):
        BenchConfig(workloads=("matmul:8,8,8",), seeds=(0,), trials=8, strategies=("x",))
    with pytest.raises(BenchError, match="no seeds"):
        BenchConfig(workloads=("matmul:8,8,8",), seeds=(), trials=8, num_evolutionary_trials=4)
    cfg = BenchConfig(
        workloads=("matmul:8,8,8",), seeds=(0,), trials=8, ratio=3, num_evolutionary_trials=4
    )
    assert [cfg.budget(s) for s in STRATEGIES] == [8, 24, 8]


def test_variants_parse_validate_and_update_droplets_settings():
    name, settings = parse_variant('norank={"rank_neighbours": false, "max_step": 2}')
    assert (name, settings) == ("norank", {"rank_neighbours": False, "max_step": 2})
    for bad, why in (
        ("norank", "NAME=JSON"),
        ("No-Rank={}", "NAME=JSON"),
        ("x={bad json", "not JSON"),
        ("x=[1]", "JSON object"),
        ('x={"rank": true}', "unexpected keyword"),
        ('x={"max_step": 0}', "max_step"),
        ('x={"scout_last": "maybe"}', "scout_last must be True or False"),
        ('x={"cost_model_warmup": 0}', "cost_model_warmup must be an int >= 1"),
        ('x={"cost_model_warmup": true}', "cost_model_warmup must be an int >= 1"),
        ('x={"start_from": "post_opt"}', "start_from must be one of"),
    ):
        with pytest.raises(BenchError, match=why):
            parse_variant(bad)
    cfg = BenchConfig(
        workloads=("matmul:8,8,8",),
        seeds=(0,),
        trials=8,
        num_evolutionary_trials=4,
        strategies=("droplet", "droplet-norank"),
        variants=((name, settings),),
    )
    assert cfg.budget("droplet-norank") == 8
    assert cfg.droplet_settings("droplet") == {"num_evolutionary_trials": 4, "pvalue": 0.05}
    assert cfg.droplet_settings("droplet-norank") == {
        "num_evolutionary_trials": 4,
        "pvalue": 0.05,
        "rank_neighbours": False,
        "max_step": 2,
    }
    with pytest.raises(BenchError, match="unknown strategies"):
        BenchConfig(
            workloads=("matmul:8,8,8",), seeds=(0,), trials=8, strategies=("droplet-other",)
        )
    # start_from is the variant's own key, not a DropletStrategy setting
    cont = parse_variant('cont={"start_from": "evolutionary", "max_step": 2}')
    cfg = BenchConfig(
        workloads=("matmul:8,8,8",),
        seeds=(0,),
        trials=8,
        num_evolutionary_trials=4,
        strategies=("droplet", "evolutionary", "droplet-norank", "droplet-cont"),
        variants=((name, settings), cont),
    )
    assert cfg.droplet_settings("droplet-cont") == {
        "num_evolutionary_trials": 4,
        "pvalue": 0.05,
        "max_step": 2,
    }
    assert [cfg.start_from(s) for s in cfg.strategies] == [None, None, "droplet", "evolutionary"]


def test_exploration_length_replays_the_adaptive_switch():
    ms_ = [5.0, 4.0, 4.0, 3.99, 4.1, 3.98, 3.97, 3.0, 3.1]  # 3.99 .. 3.97 gain < 1 %
    # after the batch ending at trial 6, 4 trials have passed without a 1 % gain
    assert exploration_length(ms_, per_batch=2, patience=4) == 6
    # checked per full batch: 3 trials without a gain after trial 5, seen after the batch of 6
    assert exploration_length(ms_, per_batch=1, patience=3) == 5
    assert exploration_length(ms_, per_batch=2, patience=3) == 6
    assert exploration_length(ms_, per_batch=2, patience=5) == len(ms_)  # 3.0 resets it
    assert exploration_length(ms_, per_batch=2, patience=None) == len(ms_)
    assert exploration_length([math.inf] * 4, per_batch=2, patience=2) == 2  # failures count
    # stagnation_after_warmup: batches that start before 4 records (0, 2) never count
    flat = [1.0] * 12
    assert exploration_length(flat, per_batch=2, patience=2) == 4
    assert exploration_length(flat, per_batch=2, patience=2, warmup=4) == 6
    assert exploration_length(flat, per_batch=2, patience=2, warmup=3) == 6
    assert exploration_length(flat, per_batch=2, patience=4, warmup=4) == 8
    # switch_point: None where the rule never switches (a variant then explores on)
    assert switch_point(flat[:4], per_batch=2, patience=2) == 4
    assert switch_point(flat[:4], per_batch=2, patience=2, warmup=4) is None
    assert switch_point(ms_, per_batch=2, patience=None) is None


def test_bench_bad_variant_exits_2(capsys, tmp_path):
    code, err = _run_cli(
        capsys, "bench", "--workload", "matmul:8,8,8", "--out", str(tmp_path / "b"),
        "--variant", 'x={"speculate": "maybe", "bogus": 1}',
    )  # fmt: skip
    assert code == 2 and "--variant x" in err and "bogus" in err
    assert not os.path.exists(tmp_path / "b")


def test_truncated_trial_line_is_ignored_but_inner_garbage_is_an_error(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"ms": 1.0, "wall_s": 1}\n{"ms": 2.0, "wall_s": 2}\n{"ms": 3.')
    assert [t["ms"] for t in read_trials(str(path))] == [1.0, 2.0]
    path.write_text('{"ms": 1.0, "wall_s": 1}\ngarbage\n{"ms": 3.0, "wall_s": 3}\n')
    with pytest.raises(ValueError, match=r"trials\.jsonl:2"):
        read_trials(str(path))


# ----------------------------------------------------------------------------------------------
# the report's arithmetic, on a hand-written folder


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if path.endswith(".jsonl"):
            f.write("".join(json.dumps(d) + "\n" for d in data))
        else:
            json.dump(data, f)


def _synthetic(out, *, secs, variants=()):
    """secs[(workload, seed)] = {strategy: samples}; a workload without entries is pending."""
    workloads = sorted({w for w, _ in secs} | {"C1D:0"})
    strategies = [*STRATEGIES, *(f"droplet-{name}" for name, _ in variants)]
    bench = {
        "workloads": workloads,
        "seeds": [0, 1],
        "strategies": strategies,
        "variants": list(variants),
        "trials": 8,
        "ratio": 5,
        "num_evolutionary_trials": 4,
        "number": 3,
        "repeat": 3,
        "min_repeat_ms": 100,
        "rounds": 10,
        "commands": ["ms-droplet bench ..."],
        "target": "llvm",
    }
    _write(os.path.join(out, "bench.json"), bench)
    for (workload, seed), samples in secs.items():
        for strategy in strategies:
            wd = run_dir(out, workload, strategy, seed)
            budget = 40 if strategy == "evolutionary" else 8
            tuning = {"evolutionary": 40.0, "post_opt": 20.0}.get(strategy, 10.0)
            droplet = {"strategy_seconds": 0.5, "descents": 2, "moves": 1}
            _write(os.path.join(wd, "trials.jsonl"), [{"ms": 1.0, "wall_s": 1.0}])
            _write(
                os.path.join(wd, "result.json"),
                {
                    "trials": budget,
                    "budget": budget,
                    "failed_trials": 0,
                    "tuning_seconds": tuning,
                    "error": None,
                    **(droplet if strategy.startswith("droplet") else {}),
                },
            )
        _write(
            remeasure_path(out, workload, seed),
            {"workload": workload, "seed": seed, "flop": 2e6, "samples": samples},
        )
    # C1D:0 has a droplet run in progress only
    _write(
        os.path.join(run_dir(out, "C1D:0", "droplet", 0), "trials.jsonl"),
        [{"ms": 2.0, "wall_s": 3.0}],
    )


def test_report_ratios_are_paired_medians_and_geomeans(tmp_path):
    out = str(tmp_path)
    secs = {
        ("matmul:8,8,8", 0): {
            "droplet": [1e-3, 2e-3, 3e-3],
            "evolutionary": [2e-3, 4e-3, 6e-3],
            "post_opt": [4e-3, 4e-3, 4e-3],
            "numpy": [1e-3, 1e-3, 1e-3],
        },
        ("matmul:8,8,8", 1): {
            "droplet": [2e-3, 2e-3, 2e-3],
            "evolutionary": [1e-3, 1e-3, 1e-3],
            "post_opt": [1e-3, 2e-3, 8e-3],
        },
    }
    _synthetic(out, secs=secs)
    markdown, summary = build_report(out)
    seeds = summary["workloads"]["matmul:8,8,8"]["seeds"]
    assert seeds["0"]["ratios"]["droplet/evolutionary"] == pytest.approx(0.5)
    assert seeds["1"]["ratios"]["droplet/evolutionary"] == pytest.approx(2.0)
    assert seeds["0"]["ratios"]["droplet/post_opt"] == pytest.approx(0.5)
    assert seeds["1"]["ratios"]["droplet/post_opt"] == pytest.approx(1.0)
    geo = summary["geomean"]
    assert geo["latency"]["droplet/evolutionary"] == pytest.approx(1.0)
    assert geo["latency"]["droplet/post_opt"] == pytest.approx(math.sqrt(0.5))
    assert geo["tuning_time"]["droplet/evolutionary"] == pytest.approx(0.25)
    assert geo["pairs"]["droplet/evolutionary"] == 2
    assert seeds["0"]["strategies"]["droplet"]["gflops"] == pytest.approx(2e6 / 2e-3 / 1e9)
    assert seeds["0"]["numpy"]["median_ms"] == pytest.approx(1.0)
    assert "numpy" not in seeds["1"]
    # The pending workload is listed with its running run, and excluded from the means.
    c1d = summary["workloads"]["C1D:0"]["seeds"]["0"]
    assert c1d["strategies"]["droplet"]["status"] == "running or interrupted"
    assert c1d["strategies"]["evolutionary"]["status"] == "not started"
    assert "| `C1D:0` | pending | pending | pending |" in markdown
    assert "| **geometric mean** |" in markdown and "0.707" in markdown
    assert "numpy matmul (reference)" in markdown
    assert os.path.exists(os.path.join(out, "report.md"))
    assert json.load(open(os.path.join(out, "summary.json")))["geomean"] == geo


def test_report_paired_ratios_equal_budget_and_aa_floor(tmp_path):
    out = str(tmp_path)
    ms_ = 1e-3
    secs = {
        ("matmul:8,8,8", 0): {
            # two rounds of three samples: droplet 1 ms then 2 ms (a slow second round)
            "droplet": [ms_] * 3 + [2 * ms_] * 3,
            "evolutionary": [ms_] * 3 + [2 * ms_] * 3,
            "post_opt": [2 * ms_] * 3 + [4 * ms_] * 3,
            EVOLUTIONARY_AT_B: [2 * ms_] * 3 + [2 * ms_] * 3,
            AA_CONTROL: [ms_] * 3 + [2 * ms_] * 3,
        },
    }
    _synthetic(out, secs=secs)
    data = json.load(open(remeasure_path(out, "matmul:8,8,8", 0)))
    data["rounds"] = 2
    _write(remeasure_path(out, "matmul:8,8,8", 0), data)
    markdown, summary = build_report(out)
    entry = summary["workloads"]["matmul:8,8,8"]["seeds"]["0"]
    # per-round ratios cancel the slow round: droplet/post_opt is 0.5 in both rounds
    assert entry["paired"]["droplet/post_opt"]["ratio"] == pytest.approx(0.5)
    assert entry["paired"]["droplet/evolutionary"]["ratio"] == pytest.approx(1.0)
    # equal budget: rounds 0.5 and 1.0
    assert entry["paired"][f"droplet/{EVOLUTIONARY_AT_B}"]["ratio"] == pytest.approx(0.75)
    assert entry["paired"][f"droplet/{AA_CONTROL}"]["ci95"] == [1.0, 1.0]
    assert f"latency droplet/{EVOLUTIONARY_AT_B}" in markdown
    assert f"latency droplet/{AA_CONTROL}" in markdown and "(noise floor)" in markdown
    assert f"time droplet/{AA_CONTROL}" not in markdown
    assert summary["geomean"]["paired"]["droplet/post_opt"] == pytest.approx(0.5)
    assert summary["between_process"] == {} and "## Between processes" not in markdown


def test_report_shows_how_far_ratios_moved_between_processes(tmp_path):
    out = str(tmp_path)
    ms_ = 1e-3
    now = {"droplet": [ms_] * 2, "evolutionary": [ms_] * 2, "post_opt": [2 * ms_] * 2}
    _synthetic(out, secs={("matmul:8,8,8", 0): now})
    path = remeasure_path(out, "matmul:8,8,8", 0)
    data = json.load(open(path)) | {"rounds": 2}
    _write(path, data)
    # two earlier processes: droplet/evolutionary was 1.10 and 0.95 there (now 1.0)
    for stamp, d in (("20260101-000000", 1.10), ("20260102-000000", 0.95)):
        earlier = data | {"samples": {"droplet": [d * ms_] * 2, "evolutionary": [ms_] * 2}}
        _write(f"{path}.bak-{stamp}", earlier)
    _write(f"{path}.bak-notes", earlier)  # not a backup the bench made: ignored
    markdown, summary = build_report(out)
    entry = summary["workloads"]["matmul:8,8,8"]["seeds"]["0"]
    assert entry["paired_earlier"]["droplet/evolutionary"] == pytest.approx([1.10, 0.95])
    assert "droplet/post_opt" not in entry["paired_earlier"]  # not in the earlier processes
    moved = summary["between_process"]["droplet/evolutionary"]
    assert moved["comparisons"] == 2
    assert moved["max_change"] == pytest.approx(0.10)
    assert moved["median_change"] == pytest.approx(math.sqrt(1.10 / 0.95) - 1)
    assert "## Between processes" in markdown and "earlier processes: 1.100, 0.950" in markdown
    # the pair's median over its three processes (1.0, 1.10, 0.95)
    assert summary["geomean"]["paired_over_processes"]["droplet/evolutionary"] == pytest.approx(1.0)
    assert summary["geomean"]["paired_over_processes"]["droplet/post_opt"] == pytest.approx(0.5)


def test_report_compares_variants_and_shows_the_strategys_own_time(tmp_path):
    out = str(tmp_path)
    ms_ = 1e-3
    secs = {
        ("matmul:8,8,8", 0): {
            "droplet": [ms_] * 6,
            "evolutionary": [2 * ms_] * 6,
            "droplet-norank": [1.5 * ms_] * 6,
        },
    }
    _synthetic(out, secs=secs, variants=[["norank", {"rank_neighbours": False}]])
    markdown, summary = build_report(out)
    entry = summary["workloads"]["matmul:8,8,8"]["seeds"]["0"]
    assert entry["ratios"]["droplet-norank/droplet"] == pytest.approx(1.5)
    assert entry["ratios"]["droplet-norank/evolutionary"] == pytest.approx(0.75)
    assert entry["time_ratios"]["droplet-norank/droplet"] == pytest.approx(1.0)
    assert entry["strategies"]["droplet"]["strategy_share"] == pytest.approx(0.05)
    assert summary["strategy_time_share"]["droplet"]["max"] == pytest.approx(0.05)
    assert "latency droplet-norank/droplet" in markdown
    assert 'droplet with `{"rank_neighbours": false}`' in markdown
    assert "2 descent(s), 1 move(s), own time 5.0 %" in markdown
    assert "droplet's own time (neighbours, replay, cost-model ranking): 5.00 %" in markdown


# ----------------------------------------------------------------------------------------------
# a real tiny bench: LocalRunner, WarmBuilder, TVM's post_optimization


def _bench(out, *extra):
    """The tiny bench in this process, with the session's warm builder for ``--builder warm``."""
    code, stdout, stderr = run_cli(*BENCH_ARGS, "--out", out, *extra)
    assert code == 0, stdout[-3000:] + stderr[-3000:]
    return stdout


def _db_lines(out, strategy):
    path = os.path.join(run_dir(out, WORKLOAD, strategy, 0), "database_tuning_record.json")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def _run_log(out, strategy):
    """Every log of a run (seed 0) of the tiny bench, concatenated."""
    logs = Path(run_dir(out, WORKLOAD, strategy, 0), "logs")
    return "".join(p.read_text() for p in logs.glob("*.log"))


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory, warm_builder):
    out = str(tmp_path_factory.mktemp("bench"))
    with pytest.MonkeyPatch.context() as mp:
        use_builder_for_warm(mp, warm_builder)
        stdout = _bench(out)
    return out, stdout


@pytest.mark.tuning
def test_tiny_bench_writes_what_report_and_plot_read(tiny_bench):
    out, stdout = tiny_bench
    assert "1 re-measured" in stdout and "3 runs tuned" in stdout
    for strategy in STRATEGIES:
        wd = run_dir(out, WORKLOAD, strategy, 0)
        result = json.load(open(os.path.join(wd, "result.json")))
        trials = read_trials(os.path.join(wd, "trials.jsonl"))
        assert result["trials"] == len(trials) > 0
        assert result["trials"] <= result["budget"] == (16 if strategy == "evolutionary" else 8)
        walls = [t["wall_s"] for t in trials]
        assert walls == sorted(walls)
    # Droplet and evolutionary record every trial in the database; post_opt's Droplet keeps its
    # candidates out of it and appends only its best one to the 4 explored records.
    assert len(_db_lines(out, "evolutionary")) == 16
    assert len(_db_lines(out, "post_opt")) == 4 + 1
    assert len(_db_lines(out, "droplet")) == len(
        read_trials(os.path.join(run_dir(out, WORKLOAD, "droplet", 0), "trials.jsonl"))
    )
    data = json.load(open(remeasure_path(out, WORKLOAD, 0)))
    assert set(data["samples"]) == {*STRATEGIES, "numpy", EVOLUTIONARY_AT_B, AA_CONTROL}
    assert all(len(v) == 2 * 3 for v in data["samples"].values())  # rounds * repeat
    assert data["flop"] == 2 * 32**3
    _, summary = build_report(out)
    entry = summary["workloads"][WORKLOAD]["seeds"]["0"]
    d = median(data["samples"]["droplet"])
    e = median(data["samples"]["evolutionary"])
    assert entry["ratios"]["droplet/evolutionary"] == pytest.approx(d / e)
    # equal-budget comparison and the A/A noise floor, as paired per-round ratios
    assert entry["paired"][f"droplet/{EVOLUTIONARY_AT_B}"]["rounds"] == 2
    aa = entry["paired"][f"droplet/{AA_CONTROL}"]
    assert aa["ci95"][0] <= aa["ratio"] <= aa["ci95"][1]
    assert summary["bench"]["tvm_version"] and summary["bench"]["cpu_model"]
    assert "--trials 8" in summary["bench"]["commands"][0]
    post = entry["strategies"]["post_opt"]
    assert post["post_opt_candidates"] == post["trials"] - 4 > 0
    # its candidates went through the bench's (warm) builder: built and ran
    assert post["post_opt_failed"] < post["post_opt_candidates"]
    # droplet's own time and its descents come from the strategy (a clone tuned the task)
    drop = json.load(open(os.path.join(run_dir(out, WORKLOAD, "droplet", 0), "result.json")))
    assert drop["descents"] >= 1 and 0 < drop["strategy_seconds"] < drop["tuning_seconds"]
    assert 0 < summary["strategy_time_share"]["droplet"]["max"] < 1
    from ms_droplet.bench._plot import plot_bench

    (png,) = plot_bench(out)
    assert open(png, "rb").read(4) == b"\x89PNG"


@pytest.mark.tuning
def test_tiny_bench_resumes_without_redoing_finished_work(tiny_bench, cli_warm_builder):
    out, _ = tiny_bench
    before = {s: _db_lines(out, s) for s in STRATEGIES}
    # Interrupt the evolutionary run after 10 of its 16 trials: drop its result, its last 6
    # records and trial lines, and the re-measurement that depended on it.
    wd = run_dir(out, WORKLOAD, "evolutionary", 0)
    os.remove(os.path.join(wd, "result.json"))
    os.remove(remeasure_path(out, WORKLOAD, 0))
    with open(os.path.join(wd, "database_tuning_record.json"), "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in before["evolutionary"][:10]))
    trials_path = os.path.join(wd, "trials.jsonl")
    kept = open(trials_path).read().splitlines()[:10]
    with open(trials_path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in kept))
    stdout = _bench(out)
    assert "1 runs tuned, 2 found finished, 1 re-measured" in stdout
    after = {s: _db_lines(out, s) for s in STRATEGIES}
    assert after["droplet"] == before["droplet"] and after["post_opt"] == before["post_opt"]
    assert after["evolutionary"][:10] == before["evolutionary"][:10]
    assert len(after["evolutionary"]) == 16  # only the 6 missing trials were measured
    trials = read_trials(trials_path)
    assert len(trials) == 16 and trials[10]["wall_s"] >= trials[9]["wall_s"]
    # Nothing left to do: a third call tunes and measures nothing.
    stdout = _bench(out)
    assert "0 runs tuned, 3 found finished, 0 re-measured" in stdout
    assert {s: _db_lines(out, s) for s in STRATEGIES} == after
    # --remeasure-again: a new re-measurement of the finished runs, the earlier one kept
    path = remeasure_path(out, WORKLOAD, 0)
    earlier = json.load(open(path))
    stdout = _bench(out, "--remeasure-again")
    assert "0 runs tuned, 3 found finished, 1 re-measured" in stdout
    assert {s: _db_lines(out, s) for s in STRATEGIES} == after
    (bak,) = glob.glob(f"{path}.bak-*")
    assert json.load(open(bak)) == earlier
    again = json.load(open(path))
    assert set(again["samples"]) == set(earlier["samples"])
    assert again["samples"] != earlier["samples"]


@pytest.mark.tuning
def test_bench_refuses_other_settings_in_the_same_folder(tiny_bench, cli_warm_builder):
    out, _ = tiny_bench
    code, _, stderr = run_cli(*BENCH_ARGS, "--out", out, "--ratio", "3")
    assert code == 2
    assert "other settings" in stderr and "ratio: 2 there, 3 now" in stderr


@pytest.mark.tuning
def test_a_variant_reuses_the_folders_runs_and_is_remeasured_with_them(
    tiny_bench, cli_warm_builder
):
    out, _ = tiny_bench
    before = {s: _db_lines(out, s) for s in STRATEGIES}
    variant = 'nospec={"speculate": false, "rank_neighbours": false}'
    cont = 'cont={"start_from": "evolutionary"}'
    more = 'more={"num_evolutionary_trials": 6, "cost_model_warmup": 4}'
    stdout = _bench(out, "--variant", variant, "--variant", cont, "--variant", more)
    # droplet and evolutionary are found finished, only the variants are tuned
    assert "3 runs tuned, 2 found finished, 1 re-measured" in stdout
    assert {s: _db_lines(out, s) for s in STRATEGIES} == before
    # the variant starts from droplet's 4 explored records (same kernels, not its own luck),
    # trains the cost model on them, and descends for the other 4 trials
    lines = _db_lines(out, "droplet-nospec")
    assert len(lines) == 8 and lines[:4] == _db_lines(out, "droplet")[:4]
    log = _run_log(out, "droplet-nospec")
    assert "the cost model is trained on 4 record(s)" in log
    assert "it scores at random until it holds 100 records" in log
    assert "descent 1 starts after 0 trial(s)" in log
    # more explores on from droplet's 4 records to its own N (6), with a model warm from 4 on
    lines = _db_lines(out, "droplet-more")
    assert len(lines) == 8 and lines[:4] == _db_lines(out, "droplet")[:4]
    log = _run_log(out, "droplet-more")
    assert "4 record(s) of this workload already in the database count toward the 6" in log
    assert "past its warm-up (4 records), it scores with what it learned" in log
    assert "descent 1 starts after 2 trial(s)" in log
    # cont continues evolutionary's own trajectory: its first 4 trials, then the descent
    lines = _db_lines(out, "droplet-cont")
    assert len(lines) == 8 and lines[:4] == _db_lines(out, "evolutionary")[:4]
    evo_trials = read_trials(
        os.path.join(run_dir(out, WORKLOAD, "evolutionary", 0), "trials.jsonl")
    )
    cont_dir = run_dir(out, WORKLOAD, "droplet-cont", 0)
    cont_trials = read_trials(os.path.join(cont_dir, "trials.jsonl"))
    assert cont_trials[:4] == evo_trials[:4]  # its tuning time includes that exploration
    assert cont_trials[4]["wall_s"] >= evo_trials[3]["wall_s"]
    log = _run_log(out, "droplet-cont")
    assert "descent 1 starts after 0 trial(s)" in log
    data = json.load(open(remeasure_path(out, WORKLOAD, 0)))
    assert {"droplet", "evolutionary", "post_opt", "droplet-nospec", "droplet-cont"} <= set(
        data["samples"]
    )
    bench = json.load(open(os.path.join(out, "bench.json")))
    assert bench["variants"] == [
        ["nospec", {"speculate": False, "rank_neighbours": False}],
        ["cont", {"start_from": "evolutionary"}],
        ["more", {"num_evolutionary_trials": 6, "cost_model_warmup": 4}],
    ]
    assert "latency droplet-nospec/droplet" in open(os.path.join(out, "report.md")).read()
    # the same name with other settings is refused
    code, _, stderr = run_cli(*BENCH_ARGS, "--out", out, "--variant", 'nospec={"max_step": 2}')
    assert code == 2 and "give the new settings another name" in stderr


def test_median_ci_is_the_binomial_order_statistic_interval():
    from ms_droplet._intervals import median_ci
    from ms_droplet.bench._report import geomean

    # Classic table values: n=10 -> 2nd..9th, n=30 -> 10th..21st order statistics.
    assert median_ci(list(range(1, 11))) == (2, 9)
    assert median_ci(list(range(30, 0, -1))) == (10, 21)
    assert median_ci([5.0, 1.0, 3.0]) == (1.0, 5.0)  # too few samples: the range
    assert geomean([0.5, 2.0]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        median_ci([])


def test_a_variant_can_tune_with_an_earlier_cost_model_warmup():
    name, settings = parse_variant('w32={"cost_model_warmup": 32, "max_step": 2}')
    cfg = BenchConfig(
        workloads=("matmul:8,8,8",),
        seeds=(0,),
        trials=8,
        num_evolutionary_trials=4,
        strategies=("droplet", "evolutionary", "droplet-w32"),
        variants=((name, settings),),
    )
    assert cfg.cost_model_warmup("droplet-w32") == 32
    assert cfg.cost_model_warmup("droplet") is None
    assert cfg.cost_model_warmup("evolutionary") is None
    assert "cost_model_warmup" not in cfg.droplet_settings("droplet-w32")
    assert cfg.droplet_settings("droplet-w32")["max_step"] == 2
    model = cost_model_with_warmup(32)
    assert isinstance(model, ms.cost_model.XGBModel) and model.num_warmup_samples == 32


def test_geomean_interval_is_the_t_interval_over_the_pairs_logs():
    from scipy import stats

    from ms_droplet._intervals import geomean_interval

    ratios = [0.8, 0.9, 1.0, 0.85]
    logs = [math.log(x) for x in ratios]
    res = stats.ttest_1samp(logs, 0.0)
    lo, hi = res.confidence_interval(0.95)
    got = geomean_interval(ratios)
    assert got["geomean"] == pytest.approx(math.exp(sum(logs) / 4))
    assert got["ci"] == pytest.approx([math.exp(lo), math.exp(hi)])
    assert got["p"] == pytest.approx(res.pvalue)
    assert (got["pairs"], got["below_one"]) == (4, 3)
    one = geomean_interval([1.2])
    assert (one["geomean"], one["ci"], one["p"]) == (pytest.approx(1.2), None, None)
    assert geomean_interval([0.9, 0.9])["p"] is None  # no spread: no test
    with pytest.raises(ValueError, match="positive"):
        geomean_interval([])


def test_report_gives_each_paired_ratio_over_pairs_with_its_interval(tmp_path):
    out = str(tmp_path)
    ms_ = 1e-3
    secs = {
        ("matmul:8,8,8", seed): {
            "droplet": [ms_] * 4,
            "evolutionary": [f * ms_] * 4,
            "post_opt": [ms_] * 4,
            EVOLUTIONARY_AT_B: [ms_] * 4,
            AA_CONTROL: [ms_] * 4,
        }
        for seed, f in ((0, 1.25), (1, 1.0 / 0.9))
    }
    _synthetic(out, secs=secs)
    markdown, summary = build_report(out)
    row = summary["geomean"]["paired_interval"]["droplet/evolutionary"]
    assert row["geomean"] == pytest.approx(math.sqrt(0.8 * 0.9))
    assert row["pairs"] == 2 and row["below_one"] == 2
    assert row["ci"][0] < row["geomean"] < row["ci"][1]
    assert "## Paired ratios over (workload, seed) pairs" in markdown
    table = markdown.split("## Paired ratios over (workload, seed) pairs")[1]
    first = next(ln for ln in table.splitlines() if ln.startswith("| droplet/"))
    assert first.startswith(f"| droplet/{AA_CONTROL} (noise floor) | 2 | 1.000 |")
    assert f"| droplet/evolutionary | 2 | {math.sqrt(0.72):.3f} |" in table


def test_two_benches_never_share_a_folder(tmp_path):
    from ms_droplet.bench._layout import lock_folder

    held = lock_folder(str(tmp_path))
    try:
        with pytest.raises(BenchError, match="another `ms-droplet bench` is running"):
            lock_folder(str(tmp_path))
    finally:
        held.release()
    lock_folder(str(tmp_path)).release()  # free again once the first one is gone


def test_report_flags_a_post_opt_whose_droplet_failed_everything(tmp_path):
    out = str(tmp_path)
    samples = {"droplet": [1e-3] * 3, "evolutionary": [1e-3] * 3, "post_opt": [2e-3] * 3}
    _synthetic(out, secs={("matmul:8,8,8", 0): samples})
    path = os.path.join(run_dir(out, "matmul:8,8,8", "post_opt", 0), "trials.jsonl")
    _write(path, [{"ms": 1.0, "wall_s": 1.0}] * 4 + [{"ms": None, "wall_s": 2.0}] * 3)
    markdown, summary = build_report(out)
    post = summary["workloads"]["matmul:8,8,8"]["seeds"]["0"]["strategies"]["post_opt"]
    assert post["post_opt_candidates"] == 3 and post["post_opt_failed"] == 3
    assert "all 3 candidates of its Droplet failed" in markdown


def test_every_suite_is_a_valid_benchmark():
    from ms_droplet._workloads import load_workload
    from ms_droplet.bench._suites import SUITES

    assert {"quick", "small", "plateau", "paper-cpu"} <= set(SUITES)
    for suite in SUITES.values():
        BenchConfig(
            workloads=suite.workloads,
            seeds=(0,),
            trials=suite.trials,
            num_evolutionary_trials=suite.num_evolutionary_trials,
        )
        if suite.name != "paper-cpu":
            for workload in suite.workloads:
                assert load_workload(workload) is not None
