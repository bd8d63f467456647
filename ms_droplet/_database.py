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
"""Check and repair MetaSchedule JSON databases (one JSON value per line).

A crash while MetaSchedule appends a record can leave a truncated last line, and TVM then refuses
the whole database with an opaque parser error. :func:`check_database` names the file and line;
:func:`repair_database` drops only a broken *last* line, after writing a backup copy. A broken line
anywhere else is never dropped: it is reported and left for a person to decide.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass

__all__ = ["DATABASE_FILES", "DatabaseProblem", "check_database", "repair_database"]

#: The two files of a MetaSchedule ``JSONDatabase`` in its work dir.
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")


@dataclass(frozen=True)
class DatabaseProblem:
    """One unreadable line of a database file."""

    path: str
    line: int  # 1-based
    message: str
    is_last_line: bool

    def __str__(self) -> str:
        where = "last line" if self.is_last_line else "line"
        return f"{self.path}:{self.line} ({where}): {self.message}"


def _files(work_dir: str) -> list[str]:
    if not os.path.isdir(work_dir):
        raise FileNotFoundError(f"database directory not found: {work_dir}")
    return [
        os.path.join(work_dir, name)
        for name in DATABASE_FILES
        if os.path.exists(os.path.join(work_dir, name))
    ]


def check_database(work_dir: str) -> list[DatabaseProblem]:
    """List the unreadable lines of the JSON database in ``work_dir`` (empty: all good)."""
    problems = []
    for path in _files(work_dir):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(
                    DatabaseProblem(path, i + 1, f"not valid JSON ({err.msg})", i == len(lines) - 1)
                )
    return problems


def repair_database(work_dir: str) -> list[str]:
    """Drop a truncated last line of each database file, after backing the file up.

    Returns
    -------
    backups : list[str]
        The backup files written (one per repaired file).

    Raises
    ------
    ValueError
        If a line other than the last one is broken: nothing is changed then.
    """
    problems = check_database(work_dir)
    inner = [p for p in problems if not p.is_last_line]
    if inner:
        listing = "\n  ".join(str(p) for p in inner)
        raise ValueError(
            "broken lines inside the database (not a truncated tail), nothing was changed:\n  "
            f"{listing}\nInspect them by hand; a copy of the files is a safe first step."
        )
    backups = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for prob in problems:
        backup = f"{prob.path}.bak-{stamp}"
        shutil.copy2(prob.path, backup)
        with open(prob.path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        kept = lines[: prob.line - 1]
        with open(prob.path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in kept))
        backups.append(backup)
    return backups
