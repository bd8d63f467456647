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
"""Issue 13: faults and bad input never lose a record, mix two tunings, or end in a traceback.

Fast tests (no real tuning): the trial log after a cut-off line, the database check and repair,
the work dir lock between two processes, and the command line's answers to bad input. The
fault-injection test with real tunings is in test_fault_injection.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tvm.s_tir import meta_schedule as ms

import ms_droplet
import ms_droplet.relax
from ms_droplet import cli
from ms_droplet._database import check_database, repair_database
from ms_droplet._lock import WorkDirLocked, lock_work_dir
from ms_droplet._trial_log import TrialLog
from ms_droplet._workloads import load_workload
from ms_droplet.bench._layout import read_trials

from ._helpers import make_db

ROOT = Path(__file__).resolve().parents[1]


def _num_records(work_dir) -> int:
    return len(ms.database.JSONDatabase(work_dir=str(work_dir)).get_all_tuning_records())


# ------------------------------------------------------------------------------------------
# Item 2: a resumed trial log after a cut-off last line


def test_trial_log_resumes_after_a_cut_off_line_without_merging(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"ms": 1.0, "wall_s": 1.0}\n{"ms": 2.0, "wa')  # killed mid-write
    TrialLog(str(path)).write([0.003, None], 5.0)
    trials = read_trials(str(path))  # raised "unreadable line" once the lines had merged
    assert [t["ms"] for t in trials] == [1.0, 3.0, None]
    assert path.read_bytes().endswith(b"\n")
    # The cut-off bytes are kept aside, not thrown away.
    assert (tmp_path / "trials.jsonl.cut").read_text() == '{"ms": 2.0, "wa\n'
    TrialLog(str(path)).write([0.004], 6.0)  # a whole file is appended to as before
    assert [t["ms"] for t in read_trials(str(path))] == [1.0, 3.0, None, 4.0]


def test_trial_curve_and_reports_are_strict_json(tmp_path):
    from ms_droplet._files import write_json

    log = TrialLog()
    log.seconds, log.wall = [None, 0.002], [1.0, 2.0]
    assert [p["best_ms"] for p in log.curve()] == [None, 2.0]
    write_json(str(tmp_path / "r.json"), {"a": float("inf"), "b": [float("nan"), 1.5]})
    text = (tmp_path / "r.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text) == {"a": None, "b": [None, 1.5]}


def test_report_json_of_a_tuning_without_a_success_is_json(target, tmp_path):
    """Every trial fails: the curve had ``Infinity`` in report.json (not JSON)."""
    # (Fakes: the real builder and runner are exercised by test_tuning.py and
    # test_fault_injection.py; here only the report of a tuning without a success matters.)
    from ms_droplet._tune import run_tuning
    from tests._fakes import HashBuilder, LandscapeRunner

    report = run_tuning(
        load_workload("matmul:16,16,16"),
        target,
        str(tmp_path),
        trials=4,
        num_trials_per_iter=4,
        strategy="evolutionary",
        runner=LandscapeRunner(),
        builder=HashBuilder(fail_fraction=1.0),  # every build fails: no latency at all
        explore_trials=4,
    )
    assert report.trials == 4 and report.final_ms is None
    text = (tmp_path / "report.json").read_text()

    def refuse(name):
        raise AssertionError(f"report.json holds {name}, which is not JSON")

    data = json.loads(text, parse_constant=refuse)
    assert [p["best_ms"] for p in data["curve"]] == [None] * 4


# ------------------------------------------------------------------------------------------
# Item 3: db check and db repair


def test_db_check_finds_a_blank_line_and_repair_drops_it(tmp_path, capsys):
    path = make_db(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:2], "\n", *lines[2:]]))  # TVM's JSONDatabase crashes on it
    problems = check_database(str(tmp_path))
    assert [(p.line, p.droppable) for p in problems] == [(3, True)]
    assert cli.main(["db", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:3" in out and "blank line" in out and "ms-droplet db repair" in out
    assert cli.main(["db", "repair", str(tmp_path)]) == 0
    assert path.read_text() == "".join(lines)
    assert check_database(str(tmp_path)) == [] and _num_records(tmp_path) == 5


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"a": 1}', "not a tuning record"),
        ("[0, [[[], []], [0.001], null]]", "expected [trace, run_secs, target, args_info]"),
        ('[7, [[[], []], [0.001], {"kind": "llvm"}, null]]', "workload index 7 names no workload"),
        ('[0, [[[], []], [0.001], "llvm", null]]', "target is not a JSON object"),
    ],
)
def test_db_check_finds_valid_json_of_the_wrong_shape(tmp_path, capsys, line, message):
    path = make_db(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join([*lines[:1], line + "\n", *lines[1:]]))
    before = path.read_bytes()
    problems = check_database(str(tmp_path))
    assert len(problems) == 1 and problems[0].line == 2 and message in problems[0].message
    assert cli.main(["db", "check", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:2" in out and "by hand" in out
    assert cli.main(["db", "repair", str(tmp_path)]) == 2  # never dropped automatically
    assert "nothing was changed" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_db_check_finds_a_workload_line_of_the_wrong_shape(tmp_path):
    make_db(tmp_path)
    wl = tmp_path / "database_workload.json"
    wl.write_text(wl.read_text() + "[1, 2]\n")
    (problem,) = check_database(str(tmp_path))
    assert problem.path == str(wl) and problem.line == 2 and "not a workload" in problem.message


def test_repair_keeps_the_bytes_of_kept_lines(tmp_path):
    path = make_db(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    # A record whose target tag holds bytes that are not UTF-8 (TVM reads them as they are).
    lines[1] = lines[1].replace(b'"tag":""', b'"tag":"caf\xe9\xff"')
    assert lines[1] != path.read_bytes().splitlines(keepends=True)[1]
    path.write_bytes(b"".join(lines) + lines[2][:20])  # and a cut-off last line
    (problem,) = check_database(str(tmp_path))
    assert problem.is_last_line and problem.droppable
    (backup,) = repair_database(str(tmp_path))
    assert path.read_bytes() == b"".join(lines)  # byte for byte
    assert Path(backup).read_bytes() == b"".join(lines) + lines[2][:20]


def test_repair_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = make_db(tmp_path)
    path.write_bytes(path.read_bytes()[:-9])
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        repair_database(str(tmp_path))
    assert path.read_bytes() == before  # the old file, whole (never a half-written one)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


def test_repair_never_loses_a_line_appended_meanwhile(tmp_path, monkeypatch):
    from ms_droplet import _database

    path = make_db(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:3]) + "\n" + "".join(lines[3:]))  # a blank line to drop
    original = _database._check

    def check_then_append(contents):
        found = original(contents)
        with open(path, "a", encoding="utf-8") as f:  # a writer that ignores the lock
            f.write(lines[0])
        return found

    monkeypatch.setattr(_database, "_check", check_then_append)
    with pytest.raises(ValueError, match="changed while it was being repaired"):
        repair_database(str(tmp_path))
    assert path.read_text().endswith(lines[0]) and path.read_text().count("\n") == 7


# ------------------------------------------------------------------------------------------
# Item 4: one process per work dir


_HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from ms_droplet._lock import lock_work_dir
    lock = lock_work_dir(sys.argv[1], owner="test holder")
    print("LOCKED", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture
def held_work_dir(tmp_path):
    """A work dir whose lock another process holds; yields (work_dir, that process)."""
    work_dir = tmp_path / "wd"
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(root=str(ROOT)), str(work_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "LOCKED"
        yield work_dir, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_a_second_process_is_refused_with_the_holder_and_the_fix(held_work_dir, capsys):
    work_dir, holder = held_work_dir
    make_db(work_dir)
    before = (work_dir / "database_tuning_record.json").read_bytes()
    argv = ["tune", "--workload", "matmul:8,8,8", "--work-dir", str(work_dir), "--trials", "2"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "test holder" in err and "--work-dir" in err
    assert cli.main(["db", "repair", str(work_dir)]) == 2
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "run `ms-droplet db repair` again" in err
    with pytest.raises(WorkDirLocked, match=f"pid {holder.pid}"):
        ms_droplet.relax.tune_relax(None, None, "llvm", str(work_dir), 4)
    assert (work_dir / "database_tuning_record.json").read_bytes() == before
    # A crash (SIGKILL) of the holder frees the work dir: the kernel drops the lock.
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    with lock_work_dir(str(work_dir), owner="test") as lock:
        assert lock.held
    assert not lock.held


def test_a_bench_refuses_a_folder_or_run_dir_in_use(held_work_dir, capsys, tmp_path):
    from ms_droplet.bench._config import BenchError
    from ms_droplet.bench._layout import lock_folder

    work_dir, holder = held_work_dir
    with pytest.raises(BenchError, match=f"pid {holder.pid}"):
        lock_folder(str(work_dir))
    with lock_work_dir(str(tmp_path / "other"), owner="one") as first:
        with pytest.raises(WorkDirLocked, match="pid"):
            lock_work_dir(str(tmp_path / "other"), owner="two")  # two attempts, one process
        assert first.held


# ------------------------------------------------------------------------------------------
# Item 5: bad input gets a clear message and exit code 2


def test_workload_file_with_a_python_syntax_error(tmp_path, capsys):
    bad = tmp_path / "syn.py"
    bad.write_text("x = 1\ndef f(:\n    pass\n")
    assert cli.main(["tune", "--workload", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2" in err and "syntax error" in err and "Traceback" not in err


def test_workload_file_with_a_tvmscript_error_shows_the_message(tmp_path, capsys):
    bad = tmp_path / "tvs.py"
    bad.write_text(
        "from tvm.script import tirx as T\n\n"
        "@T.prim_func\n"
        'def main(A: T.Buffer((8,), "float32")):\n'
        "    for i in range(8):\n"
        "        A[i] = undefined_name + 1.0\n"
    )
    assert cli.main(["tune", "--workload", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "TVMScript error" in err and "Undefined variable: undefined_name" in err
    assert "tvs.py:6" in err


@pytest.mark.parametrize("value", ["0", "-1", "inf", "soon"])
def test_builder_timeout_must_be_positive(value, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["tune", "--builder-timeout", value])
    assert err.value.code == 2
    assert "--builder-timeout" in capsys.readouterr().err


def test_bench_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "a_file"
    out.write_text("not a folder")
    assert cli.main(["bench", "--workload", "matmul:8,8,8", "--out", str(out)]) == 2
    assert "is a file" in capsys.readouterr().err
    from ms_droplet.bench._config import BenchError
    from ms_droplet.bench._layout import lock_folder

    with pytest.raises(BenchError, match="is a file"):
        lock_folder(str(out))
    with pytest.raises(BenchError, match="cannot be used as a folder"):
        lock_folder(str(out / "below"))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ('{"kind": "llvm", "num-cores": 0}', "whole number >= 1"),
        ('{"kind": "llvm", "num-cores": 2, "mcpu": "nonsense"}', "LLVM does not know the CPU"),
        ('{"kind": "nonsense"}', "invalid --target"),
    ],
)
def test_target_errors_exit_2(target, message, tmp_path, capsys):
    for argv in (
        ["tune", "--workload", "matmul:8,8,8", "--work-dir", str(tmp_path)],
        ["bench", "--workload", "matmul:8,8,8", "--out", str(tmp_path / "b")],
    ):
        assert cli.main([*argv, "--target", target]) == 2
        assert message in capsys.readouterr().err


def test_one_trial_per_batch_is_refused_for_droplet(tmp_path, capsys):
    assert cli.main(["tune", "--num-trials-per-iter", "1", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--num-trials-per-iter 1" in err and "2 or more" in err
    argv = ["bench", "--workload", "matmul:8,8,8", "--out", str(tmp_path / "b")]
    assert cli.main([*argv, "--num-trials-per-iter", "1"]) == 2
    assert "--num-trials-per-iter 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_trials_per_iter >= 2"):
        ms_droplet.relax.tune_relax(None, None, "llvm", str(tmp_path), 4, num_trials_per_iter=1)
    assert not os.listdir(tmp_path)  # refused before anything was written


# ------------------------------------------------------------------------------------------
# Items 6 and 7: what the README tells a new user


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def test_readme_first_python_example_uses_the_warm_builder():
    section = _readme_section("Use it from Python")
    begin = section.index("```python")
    first_example = section[begin : section.index("\n```", begin + 1)]
    first_call = first_example[first_example.index("ms.tune_tir(") :]
    first_call = first_call[: first_call.index("\n)")]
    assert "builder=ms_droplet.WarmBuilder()" in first_call


def test_readme_rpc_section_warns_and_binds_a_trusted_interface():
    section = _readme_section("Measuring on a fleet (RPC)")
    words = " ".join(section.split())
    assert "no authentication" in words and "runs any code that is uploaded" in words
    commands = [line for line in section.splitlines() if line.startswith("python -m tvm.exec.rpc")]
    starts = [c for c in commands if "rpc_tracker" in c or "rpc_server" in c]
    assert starts and all("--host" in c and "0.0.0.0" not in c for c in starts)
