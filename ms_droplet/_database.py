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
the whole database with an opaque parser error; a blank line makes TVM 0.27's ``JSONDatabase``
crash the process, and a line that is valid JSON of another shape fails its ``Check``.
:func:`check_database` finds all three, with file, line and the fix. :func:`repair_database`
drops only what holds no record (blank lines) and a truncated *last* line, after writing a backup
copy; it rewrites the file atomically, byte for byte for the lines it keeps, under the work dir's
lock. A broken line anywhere else is never dropped: it is reported and left for a person to
decide.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

from ._files import replace_atomically
from ._lock import lock_work_dir

__all__ = [
    "DATABASE_FILES",
    "DatabaseProblem",
    "check_database",
    "count_records",
    "repair_database",
]

#: The two files of a MetaSchedule ``JSONDatabase`` in its work dir.
DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
_WORKLOADS, _RECORDS = DATABASE_FILES


def count_records(work_dir: str, module_equality: str = "structural") -> int:
    """The records of the JSON database in ``work_dir`` (0 when there is none yet)."""
    if not os.path.exists(os.path.join(work_dir, _RECORDS)):
        return 0
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    db = JSONDatabase(work_dir=work_dir, module_equality=module_equality)
    return len(db.get_all_tuning_records())


_BY_HAND = "move that line out of the file by hand (keep a copy of the file first)"


@dataclass(frozen=True)
class DatabaseProblem:
    """One line of a database file that TVM cannot load.

    Attributes
    ----------
    path : str
        The file.
    line : int
        The line number, 1-based.
    message : str
        What is wrong with it and what to do.
    is_last_line : bool
        Whether it is the last line of the file (a truncated write).
    droppable : bool
        Whether ``repair_database`` drops it (a blank line, or an unparseable last line).
    """

    path: str
    line: int  # 1-based
    message: str
    is_last_line: bool
    droppable: bool = False

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


def _split(data: bytes) -> list[bytes]:
    """The lines of ``data`` without their newlines (no empty entry after a final newline)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return lines


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _shape_error(name: str, value: Any, num_workloads: int | None) -> str | None:
    """Why a parsed line is not what TVM's ``JSONDatabase`` reads from file ``name``; or None."""
    if name == _WORKLOADS:
        if not (
            isinstance(value, list)
            and len(value) == 2
            and isinstance(value[0], str)
            and isinstance(value[1], str)
        ):
            return 'not a workload (expected ["<structural hash>", "<module>"])'
        return None
    if not (isinstance(value, list) and len(value) == 2 and _is_int(value[0])):
        return "not a tuning record (expected [<workload index>, [trace, run_secs, target, args]])"
    index, record = value
    if index < 0 or (num_workloads is not None and index >= num_workloads):
        known = "" if num_workloads is None else f" ({_WORKLOADS} has {num_workloads})"
        return f"workload index {index} names no workload{known}"
    if not (isinstance(record, list) and len(record) == 4):
        return "not a tuning record (expected [trace, run_secs, target, args_info] after the index)"
    trace, run_secs, target, args_info = record
    if not isinstance(trace, list):
        return "the record's trace is not a JSON array"
    if run_secs is not None and not (
        isinstance(run_secs, list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in run_secs)
    ):
        return "the record's run_secs is not an array of numbers (or null)"
    if target is not None and not isinstance(target, dict):
        return "the record's target is not a JSON object (or null)"
    if args_info is not None and not isinstance(args_info, list):
        return "the record's args_info is not a JSON array (or null)"
    return None


def _check_lines(path: str, lines: list[bytes], num_workloads: int | None) -> list[DatabaseProblem]:
    name = os.path.basename(path)
    problems = []
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            problems.append(
                DatabaseProblem(
                    path,
                    i + 1,
                    "blank line (TVM's JSONDatabase crashes on it); `ms-droplet db repair` "
                    "drops it",
                    last,
                    droppable=True,
                )
            )
            continue
        try:
            value = json.loads(raw.decode("utf-8", errors="replace"))
        except json.JSONDecodeError as err:
            fix = (
                "a crash cut it off; `ms-droplet db repair` drops it"
                if last
                else f"it is not a cut-off last line, so {_BY_HAND}"
            )
            problems.append(
                DatabaseProblem(path, i + 1, f"not valid JSON ({err.msg}); {fix}", last, last)
            )
            continue
        why = _shape_error(name, value, num_workloads)
        if why is not None:
            problems.append(DatabaseProblem(path, i + 1, f"valid JSON but {why}; {_BY_HAND}", last))
    return problems


def _read(work_dir: str) -> dict[str, bytes]:
    out = {}
    for path in _files(work_dir):
        with open(path, "rb") as f:
            out[path] = f.read()
    return out


def _check(contents: dict[str, bytes]) -> list[DatabaseProblem]:
    num_workloads = None
    for path, data in contents.items():
        if os.path.basename(path) == _WORKLOADS:
            num_workloads = sum(1 for line in _split(data) if line.strip())
    problems = []
    for path, data in contents.items():
        problems += _check_lines(path, _split(data), num_workloads)
    return problems


def check_database(work_dir: str) -> list[DatabaseProblem]:
    """List the lines of the JSON database in ``work_dir`` that TVM cannot load (empty: good).

    Finds unparseable lines (a truncated last line, or damage inside), blank lines, and lines of
    valid JSON that are not a workload / tuning record as ``JSONDatabase`` reads them (wrong
    shape, or a workload index with no workload).

    Raises
    ------
    FileNotFoundError
        When ``work_dir`` does not exist.
    """
    return _check(_read(work_dir))


def repair_database(work_dir: str, *, lock: bool = True) -> list[str]:
    """Drop blank lines and a truncated last line of each database file, after a backup.

    The files are read once, checked, and rewritten atomically (temporary file, fsync, rename);
    the lines kept are written back byte for byte (bytes that are not UTF-8 included).

    Parameters
    ----------
    work_dir : str
        The tuning work dir.
    lock : bool
        Hold the work dir's lock (:func:`~ms_droplet._lock.lock_work_dir`) while repairing, so
        that no tuning of ``ms_droplet`` appends meanwhile; False when the caller holds it.

    Returns
    -------
    backups : list[str]
        The backup files written (one per repaired file).

    Raises
    ------
    ValueError
        If a line that cannot be dropped safely is broken (damage inside the file, or a line of
        the wrong shape): nothing is changed then.
    ms_droplet._lock.WorkDirLocked
        When another process (e.g. a tuning) holds the work dir.
    FileNotFoundError
        When ``work_dir`` does not exist.
    """
    if not os.path.isdir(work_dir):
        raise FileNotFoundError(f"database directory not found: {work_dir}")
    if lock:
        with lock_work_dir(
            work_dir,
            owner="ms-droplet db repair",
            fix="stop that process (or wait for it to finish), then run `ms-droplet db repair` "
            "again",
        ):
            return _repair(work_dir)
    return _repair(work_dir)


def _repair(work_dir: str) -> list[str]:
    contents = _read(work_dir)
    problems = _check(contents)
    stuck = [p for p in problems if not p.droppable]
    if stuck:
        listing = "\n  ".join(str(p) for p in stuck)
        raise ValueError(
            "lines that cannot be dropped safely (not a truncated tail or a blank line), "
            f"nothing was changed:\n  {listing}\n"
            "Inspect them by hand; a copy of the files is a safe first step."
        )
    backups = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path, data in contents.items():
        drop = {p.line for p in problems if p.path == path}
        if not drop:
            continue
        lines = _split(data)
        kept = b"".join(line + b"\n" for i, line in enumerate(lines) if i + 1 not in drop)
        if os.path.getsize(path) != len(data):
            raise ValueError(
                f"{path} changed while it was being repaired (a process without the work dir's "
                "lock is writing it); nothing was changed there: stop it and run again"
            )
        backup = f"{path}.bak-{stamp}"
        replace_atomically(backup, data)  # exactly what was checked
        shutil.copystat(path, backup)
        replace_atomically(path, kept)
        backups.append(backup)
    return backups
