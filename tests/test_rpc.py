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
"""Droplet measuring through TVM's RPC tracker: a tracker and two servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
from tvm.s_tir.meta_schedule.testing import te_workload

import ms_droplet
from ms_droplet import cli
from ms_droplet._records import samples_of
from ms_droplet.bench._config import AA_CONTROL, EVOLUTIONARY_AT_B
from ms_droplet.bench._layout import remeasure_path, run_dir

from ._helpers import BENCH_ARGS, WORKLOAD

pytestmark = pytest.mark.tuning
pytest.importorskip("tornado", reason="TVM's RPC tracker needs tornado (in the test extras)")

KEY = "ms-droplet-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _wait_for_servers(port: int, n: int, timeout: float = 120.0) -> None:
    from tvm import rpc

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            summary = rpc.connect_tracker("127.0.0.1", port).summary()
            free = sum(
                v.get("free", 0) for k, v in summary.get("queue_info", {}).items() if k == KEY
            )
            if free >= n:
                return
        except (ConnectionError, OSError, RuntimeError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{n} RPC servers did not register with the tracker in {timeout} s")


@contextlib.contextmanager
def _fleet():
    """A tracker and two servers: (tracker port, [tracker, server, server] processes)."""
    port = _free_port()
    procs = [
        _spawn(
            [
                "tvm.exec.rpc_tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--port-end",
                str(port + 1),
                "--silent",
            ]
        )
    ]
    try:
        time.sleep(1.0)
        for _ in range(2):
            sport = _free_port()
            procs.append(
                _spawn(
                    [
                        "tvm.exec.rpc_server",
                        "--tracker",
                        f"127.0.0.1:{port}",
                        "--key",
                        KEY,
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(sport),
                        "--port-end",
                        str(sport + 1),
                        "--silent",
                    ]
                )
            )
        _wait_for_servers(port, 2)
        yield port, procs
    finally:
        for proc in procs:
            _stop(proc)


@pytest.fixture(scope="module")
def fleet():
    """A fleet shared by the tests that leave it intact."""
    with _fleet() as f:
        yield f


@pytest.fixture
def doomed_fleet():
    """A fleet of its own for the test that kills one of its servers."""
    with _fleet() as f:
        yield f


def _runner(port: int) -> ms.runner.RPCRunner:
    return ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(
            tracker_host="127.0.0.1",
            tracker_port=port,
            tracker_key=KEY,
            session_timeout_sec=60,
        ),
        evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=10),
        max_workers=2,
    )


@derived_object
class KillAfterFirstBatch(PyMeasureCallback):
    """Kills a server once the first batch is measured, and counts the batches after that."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__()
        self.proc = proc
        self.batches = 0
        self.after_kill = 0

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.batches += 1
        if self.batches == 1:
            _stop(self.proc)
        else:
            self.after_kill += 1


def test_droplet_through_rpc_and_a_server_dies(doomed_fleet, target, tmp_path, warm_builder):
    port, procs = doomed_fleet
    mod = te.create_prim_func(te_workload.matmul(64, 64, 64))
    killer = KillAfterFirstBatch(procs[1])
    db = ms.tune_tir(
        mod,
        target,
        str(tmp_path),
        max_trials_global=48,  # one batch before the kill, two after it
        num_trials_per_iter=16,
        strategy=ms_droplet.DropletStrategy(
            num_evolutionary_trials=16, evolutionary={"population_size": 64}
        ),
        builder=warm_builder,
        runner=_runner(port),
        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), killer],
        seed=3,
    )
    assert procs[1].poll() is not None, "the server was not killed during the test"
    assert killer.after_kill >= 1, "no batch was measured after the server died"
    records = ms.database.JSONDatabase(work_dir=str(tmp_path)).get_all_tuning_records()
    assert len(records) == len(db.get_all_tuning_records()) > 16
    ok = [r for r in records if samples_of(r.run_secs) is not None]
    assert len(ok) > 16, "the tuning did not go on after the server died"
    # Failed measurements are stored as failures (MetaSchedule's 1e10), never as latencies.
    assert all(min(samples_of(r.run_secs)) < 1.0 for r in ok)


def test_cli_tune_through_rpc(fleet, tmp_path, capsys, cli_warm_builder):
    port, _ = fleet
    code = cli.main(
        [
            "tune",
            "--workload",
            "matmul:32,32,32",
            "--trials",
            "16",
            "--num-evolutionary-trials",
            "8",
            "--num-trials-per-iter",
            "8",
            "--num-cores",
            "2",
            "--rpc-tracker",
            f"127.0.0.1:{port}",
            "--rpc-key",
            KEY,
            "--repeat",
            "3",
            "--min-repeat-ms",
            "10",
            "--work-dir",
            str(tmp_path),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    # The final kernels are re-measured on a server of the fleet, interleaved.
    assert "re-measured interleaved" in out and "GFLOP/s" in out
    records = ms.database.JSONDatabase(work_dir=str(tmp_path)).get_all_tuning_records()
    assert len([r for r in records if samples_of(r.run_secs) is not None]) > 8


def test_cli_bench_through_rpc(fleet, tmp_path, capsys, cli_warm_builder):
    port, _ = fleet
    out = str(tmp_path / "bench")
    common = ["bench", "--workload", WORKLOAD, "--out", out]
    rpc = ["--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", KEY]
    # TVM's post_optimization measures locally whatever the runner: refused on a fleet.
    assert cli.main([*common, *rpc, "--strategies", "post_opt"]) == 2
    assert "cannot run on an RPC fleet" in capsys.readouterr().err
    code = cli.main([*BENCH_ARGS, "--out", out, *rpc, "--num-cores", "2"])
    assert code == 0, capsys.readouterr().err
    assert "2 runs tuned" in capsys.readouterr().out
    assert not os.path.exists(run_dir(out, WORKLOAD, "post_opt", 0))
    for strategy, budget in (("droplet", 8), ("evolutionary", 16)):
        work_dir = run_dir(out, WORKLOAD, strategy, 0)
        records = ms.database.JSONDatabase(work_dir=work_dir).get_all_tuning_records()
        assert 0 < len(records) <= budget
        assert any(samples_of(r.run_secs) is not None for r in records)
    data = json.load(open(remeasure_path(out, WORKLOAD, 0)))
    # Re-measured on a server of the fleet; numpy's reference runs only on this machine.
    assert data["device"] == "rpc"
    assert set(data["samples"]) == {"droplet", "evolutionary", EVOLUTIONARY_AT_B, AA_CONTROL}
    assert all(len(v) == 2 * 3 for v in data["samples"].values())
