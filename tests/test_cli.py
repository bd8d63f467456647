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
"""Database check/repair and the command line's handling of bad input."""

from __future__ import annotations

import os

import pytest
from tvm.s_tir import meta_schedule as ms

from ms_droplet import cli
from ms_droplet._database import check_database, repair_database
from ms_droplet._workloads import available_workloads, load_workload

from ._helpers import make_db


def test_truncated_tail_is_reported_and_repaired(tmp_path):
    path = make_db(tmp_path)
    text = path.read_text()
    path.write_text(text[:-25])  # a crash mid-write
    problems = check_database(str(tmp_path))
    assert len(problems) == 1
    assert problems[0].path == str(path) and problems[0].line == 5 and problems[0].is_last_line
    backups = repair_database(str(tmp_path))
    assert len(backups) == 1 and open(backups[0]).read() == text[:-25]
    assert check_database(str(tmp_path)) == []
    assert len(ms.database.JSONDatabase(work_dir=str(tmp_path)).get_all_tuning_records()) == 4


def test_broken_line_inside_is_never_dropped(tmp_path):
    path = make_db(tmp_path)
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = lines[1][:10] + "\n"
    path.write_text("".join(lines))
    before = path.read_text()
    with pytest.raises(ValueError, match=r"database_tuning_record.json:2"):
        repair_database(str(tmp_path))
    assert path.read_text() == before
    assert not [p for p in os.listdir(tmp_path) if ".bak-" in p]


def test_missing_database_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        check_database(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "--pvalue", "2"], "p-value in (0, 1]"),
        (["tune", "--trials", "0"], ">= 1"),
        (["tune", "--trials", "many"], "whole number"),
        (["tune", "--strategy", "random"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_parser_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(argv)
    assert err.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_workload_and_unwritable_dir(tmp_path, capsys):
    assert cli.main(["tune", "--workload", "C2D:99", "--work-dir", str(tmp_path)]) == 2
    assert "indices 0..3" in capsys.readouterr().err
    assert cli.main(["tune", "--workload", "nonsense"]) == 2
    assert "unknown workload" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["tune", "--workload", "matmul:8,8,8", "--work-dir", str(blocker / "x")]) == 2
    assert "not writable" in capsys.readouterr().err
    assert cli.main(["tune", "--workload", "matmul:8,8,8", "--target", "llvm -num-cores 2"]) == 2
    assert "JSON dict" in capsys.readouterr().err


def test_tune_refuses_a_damaged_database_with_the_fix(tmp_path, capsys):
    path = make_db(tmp_path)
    path.write_text(path.read_text()[:-10])
    assert cli.main(["tune", "--workload", "matmul:8,8,8", "--work-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "database_tuning_record.json:5" in err and "ms-droplet db repair" in err


def test_workloads_and_help(capsys):
    assert "C2D:0" in available_workloads() and "DEP:1" in available_workloads()
    with pytest.raises(SystemExit) as exc:
        cli.main(["tune", "--help"])
    assert exc.value.code == 0
    assert "--num-evolutionary-trials" in capsys.readouterr().out


def test_tvmscript_workload_file(tmp_path):
    f = tmp_path / "wl.py"
    header = "from tvm.script import ir as I\nfrom tvm.script import tirx as T\n"
    f.write_text(header + load_workload("matmul:8,8,8").script())
    mod = load_workload(str(f))
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
    bad = tmp_path / "empty.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no IRModule"):
        load_workload(str(bad))
