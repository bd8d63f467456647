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
"""Resume: a tuning killed with SIGKILL during the descent continues from its database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from tvm.s_tir import meta_schedule as ms

from ms_droplet._records import samples_of

from ._helpers import tune_for_resume

ROOT = Path(__file__).resolve().parents[1]

# The process that is killed: the same tuning as the resumed run, journaling every batch.
_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests._helpers import tune_for_resume
tune_for_resume(sys.argv[1], sys.argv[2], float(sys.argv[3]))
print("DONE")
"""


def _start(tmp_path: Path, slow: float) -> subprocess.Popen:
    script = tmp_path / "tune.py"
    script.write_text(_SCRIPT.format(root=str(ROOT)))
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(tmp_path / "wd"),
            str(tmp_path / "batches.jsonl"),
            str(slow),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _batches(tmp_path: Path) -> list[list[str]]:
    lines = (tmp_path / "batches.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _best(work_dir: Path) -> float:
    db = ms.database.JSONDatabase(work_dir=str(work_dir))
    secs = [samples_of(r.run_secs) for r in db.get_all_tuning_records()]
    return min(sum(s) / len(s) for s in secs if s)


@pytest.mark.tuning
def test_kill_during_descent_then_resume(tmp_path):
    proc = _start(tmp_path, slow=1.0)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if (tmp_path / "batches.jsonl").exists() and len(_batches(tmp_path)) >= 3:
                break  # one exploration batch and two descent batches are on disk
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.2)
        else:
            raise AssertionError("the tuning never reached the descent")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _batches(tmp_path)
    wd = tmp_path / "wd"
    records_before = ms.database.JSONDatabase(work_dir=str(wd)).get_all_tuning_records()
    assert len(records_before) >= sum(len(b) for b in before)
    best_before = _best(wd)

    # Resume in this process (a fresh tuning on the same work dir; only the kill needs a process
    # of its own).
    tune_for_resume(str(wd), str(tmp_path / "batches.jsonl"), 0.0)
    after = _batches(tmp_path)[len(before) :]
    assert after, "the resumed run measured nothing"
    # No exploration again: the resumed run starts with a descent batch (control first).
    first_keys = {k for b in before for k in b}
    assert after[0][0] in first_keys, "the resumed descent should start from a known record"
    # Nothing measured twice over both runs, except the controls (the incumbent, first in its
    # batch and spread through it) and confirmations (at most 2 challengers, 2 slots each).
    seen: set[str] = set(before[0])
    # (the resumed run ends with its final batch: 2-4 known kernels re-measured in rounds)
    *after_descent, final = after
    assert set(final) <= {k for b in before + after_descent for k in b}
    assert 2 <= len(set(final)) <= 4 and len(set(Counter(final).values())) == 1, final
    for batch in before[1:] + after_descent:
        control = batch[0]
        again = [k for k in batch if k in seen and k != control]
        assert len(set(again)) <= 2, "a neighbour was measured twice across the kill"
        assert all(again.count(k) <= 2 for k in again), "a confirmation took more than 2 slots"
        seen.update(batch)
    # Every record of the first run is still there and parseable, and the best did not get worse.
    records_after = ms.database.JSONDatabase(work_dir=str(wd)).get_all_tuning_records()
    assert len(records_after) == len(records_before) + sum(len(b) for b in after)
    assert _best(wd) <= best_before
