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
"""``python -m ms_droplet.bench.builder``: its arguments, tables, and a real tiny run."""

from __future__ import annotations

import argparse
import json

import pytest
from tvm.s_tir import meta_schedule as ms

from ms_droplet._records import best_record, find_workload, latency
from ms_droplet._workloads import load_workload
from ms_droplet.bench import builder as bench_builder


def test_workload_argument():
    assert bench_builder.parse_workload(" matmul:8,16,32 ") == "matmul:8,16,32"
    for bad, message in (("C2D:0", "use matmul:M,N,K"), ("matmul:0,8,8", "positive")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            bench_builder.parse_workload(bad)


def _run(builder, wall, best_us=None):
    return {
        "round": 0,
        "builder": builder,
        "wall_s": wall,
        "build_s": wall / 2,
        "build_calls": 2,
        "candidates_built": 8,
        "build_failures": 0,
        "build_timeouts": 0,
        "trials": 8,
        "failed_trials": 0,
        "best_latency_us": best_us,
        "best_gflops": None,
    }


def test_table_and_medians():
    runs = [
        _run("LocalBuilder", 10.0, 5.0),
        _run("WarmBuilder", 4.0, 6.0),
        _run("LocalBuilder", 14.0, 7.0),
        _run("WarmBuilder", 6.0),
    ]
    table = bench_builder.markdown_table(runs)
    lines = table.splitlines()
    assert len(lines) == 2 + len(runs)
    assert lines[2].startswith("| 0 | LocalBuilder | 10.0 | 5.0 |")
    assert lines[-1].endswith("| - | - |")  # no latency: shown as "-"
    summary = bench_builder.summarize(runs)
    assert summary["LocalBuilder"] == {
        "wall_s": 12.0,
        "build_s": 6.0,
        "build_timeouts": 0,
        "best_latency_us": 6.0,
    }
    assert summary["WarmBuilder"]["wall_s"] == 5.0
    assert summary["WarmBuilder"]["best_latency_us"] == 6.0  # the None is left out


@pytest.mark.tuning
def test_main_tunes_in_order_and_writes_the_results(tmp_path, monkeypatch, warm_builder):
    """The whole command on a tiny matmul. Both of its builders are the session's warm builder
    here (a LocalBuilder pays its workers' start-up on every build() call): this checks the
    harness (order, counting, records, files), not which builder is faster."""
    monkeypatch.setattr(
        bench_builder, "make_builder", lambda kind, timeout_sec, **kw: (warm_builder, False)
    )
    out = tmp_path / "out"
    argv = ["--trials", "4", "--trials-per-iter", "4", "--workload", "matmul:16,16,16"]
    assert bench_builder.main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["info"]["workload"] == "matmul:16,16,16 float32"
    assert "ms_droplet.bench.builder --trials 4" in result["info"]["command"]
    runs = result["runs"]
    assert [r["builder"] for r in runs] == ["LocalBuilder", "WarmBuilder"]
    for run in runs:
        work_dir = out / "work_dirs" / f"round0_{run['builder']}"
        db = ms.database.JSONDatabase(work_dir=str(work_dir))
        records = db.get_all_tuning_records()
        assert run["trials"] == len(records) == run["candidates_built"] == 4
        assert run["build_calls"] >= 1 and run["build_timeouts"] <= run["build_failures"]
        failed = sum(1 for r in records if latency(r.run_secs) is None)
        assert run["failed_trials"] == failed
        best = best_record(db, find_workload(db, load_workload("matmul:16,16,16")))
        assert run["best_latency_us"] == pytest.approx(1e6 * latency(best.run_secs))
        assert run["best_gflops"] == pytest.approx(
            2 * 16**3 / (run["best_latency_us"] * 1e-6) / 1e9
        )
    assert set(result["medians"]) == {"LocalBuilder", "WarmBuilder"}
    md = (out / "results.md").read_text()
    assert md.startswith("# LocalBuilder vs WarmBuilder") and "| round | builder |" in md
