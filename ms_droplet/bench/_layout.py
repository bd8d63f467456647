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
"""The on-disk layout of a benchmark folder (``ms-droplet bench --out DIR``).

Everything ``report`` and ``plot`` show is rebuilt from these files; nothing is kept only in
memory::

    DIR/.lock                                        held by the bench running into DIR
    DIR/bench.json                                   settings and provenance: machines, TVM and
                                                     ms_droplet versions, Python, commands
    DIR/runs/<workload>/<strategy>/seed<S>/          one MetaSchedule work dir per run
        database_workload.json                       MetaSchedule's JSON database
        database_tuning_record.json
        trials.jsonl                                 one line per measured trial, in order:
                                                     {"ms": float | null, "wall_s": float}
        result.json                                  written when the run has finished
    DIR/remeasure/<workload>/seed<S>.json            the interleaved re-measurement of every
                                                     strategy's best kernel (and numpy's matmul)
    DIR/remeasure/<workload>/seed<S>.json.bak-<time> earlier re-measurements (each in a process
                                                     of its own), kept when a strategy finished
                                                     later or with --remeasure-again: the
                                                     between-process noise

``<workload>`` is the workload spec with characters other than letters, digits, ``.``, ``_``
and ``-`` replaced by ``_`` (``matmul:512,512,512`` becomes ``matmul_512_512_512``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._database import check_database, repair_database
from .._files import write_json as _write_json
from .._lock import WorkDirLock, WorkDirLocked, lock_work_dir
from ._config import FIXED_SETTINGS, STRATEGIES, BenchError

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.database import JSONDatabase

__all__ = [
    "Remeasure",
    "Run",
    "load_bench",
    "load_earlier_remeasures",
    "load_remeasures",
    "load_runs",
    "lock_folder",
    "open_run_database",
    "read_trials",
    "remeasure_path",
    "run_dir",
    "slug",
    "write_bench_json",
    "write_json",
]

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_BACKUP = re.compile(r"\.bak-\d{8}-\d{6}")


def slug(workload: str) -> str:
    """The folder name of a workload spec."""
    return _UNSAFE.sub("_", workload)


def run_dir(out: str, workload: str, strategy: str, seed: int) -> str:
    """The work dir of one (workload, strategy, seed) run."""
    return os.path.join(out, "runs", slug(workload), strategy, f"seed{seed}")


def remeasure_path(out: str, workload: str, seed: int) -> str:
    """The file holding the interleaved re-measurement of one (workload, seed)."""
    return os.path.join(out, "remeasure", slug(workload), f"seed{seed}.json")


@dataclass
class Run:
    """One finished or interrupted tuning run, as stored on disk.

    Attributes
    ----------
    workload, strategy : str
        The workload spec and the strategy name.
    seed : int
        The tuning seed.
    finished : bool
        Whether ``result.json`` exists (the run completed).
    result : dict
        The content of ``result.json`` (empty when not finished).
    trials : list[dict]
        The lines of ``trials.jsonl``: ``{"ms": latency or None for a failure, "wall_s": ...}``.
    """

    workload: str
    strategy: str
    seed: int
    finished: bool
    result: dict[str, Any] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)

    def curve(self) -> tuple[list[int], list[float], list[float]]:
        """Best-so-far latency: (trial numbers, wall seconds, best ms), from the first success."""
        nums, walls, bests = [], [], []
        best = float("inf")
        for i, t in enumerate(self.trials):
            if t.get("ms") is not None:
                best = min(best, float(t["ms"]))
            if best < float("inf"):
                nums.append(i + 1)
                walls.append(float(t["wall_s"]))
                bests.append(best)
        return nums, walls, bests


@dataclass
class Remeasure:
    """The interleaved re-measurement of every strategy's best kernel for one (workload, seed).

    Attributes
    ----------
    workload : str
    seed : int
    flop : float
        Floating-point operations of one run of the workload.
    samples : dict[str, list[float]]
        Run seconds per strategy (all rounds); ``"numpy"`` holds numpy's matmul for matmuls.
    rounds : int
        Interleaved rounds the samples come from (each round gives ``len(samples) / rounds``).
    missing : dict[str, str]
        Strategies without a kernel to re-measure, and why.
    """

    workload: str
    seed: int
    flop: float
    samples: dict[str, list[float]]
    rounds: int = 0
    missing: dict[str, str] = field(default_factory=dict)


def open_run_database(work_dir: str, *, locked: bool = False) -> JSONDatabase:
    """A run's JSON database, after dropping a truncated last line (``locked``: the caller
    holds the run dir's lock already)."""
    from tvm.s_tir.meta_schedule.database import JSONDatabase

    problems = check_database(work_dir)
    if problems:
        # A run killed mid-write leaves a truncated last line: drop it (a backup is kept).
        # Broken lines elsewhere make repair_database raise, and nothing is changed.
        for backup in repair_database(work_dir, lock=not locked):
            logger.warning("dropped a truncated database line; the original is %s", backup)
    return JSONDatabase(work_dir=work_dir)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); delete it to redo that step"
            ) from None


def read_trials(path: str) -> list[dict[str, Any]]:
    """Read ``trials.jsonl``; a truncated last line (a crash mid-write) is ignored."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the last non-empty line: cut off by a crash
                break
            raise ValueError(f"{path}:{i + 1}: unreadable line {line[:80]!r}") from None
    return out


def load_bench(out: str) -> dict[str, Any]:
    """Read ``DIR/bench.json``."""
    path = os.path.join(out, "bench.json")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{out} is not a benchmark folder (no bench.json); create one with "
            f"`ms-droplet bench --out {out}`"
        )
    return _read_json(path)


def load_runs(out: str) -> list[Run]:
    """Every run under ``DIR/runs``, finished or not, sorted by workload, strategy, seed."""
    bench = load_bench(out)
    runs = []
    for workload in bench.get("workloads", []):
        for strategy in bench.get("strategies", STRATEGIES):
            for seed in bench.get("seeds", []):
                path = run_dir(out, workload, strategy, seed)
                if not os.path.isdir(path):
                    continue
                result_path = os.path.join(path, "result.json")
                finished = os.path.exists(result_path)
                runs.append(
                    Run(
                        workload=workload,
                        strategy=strategy,
                        seed=seed,
                        finished=finished,
                        result=_read_json(result_path) if finished else {},
                        trials=read_trials(os.path.join(path, "trials.jsonl")),
                    )
                )
    return runs


def _remeasure(workload: str, seed: int, path: str) -> Remeasure:
    data = _read_json(path)
    return Remeasure(
        workload=workload,
        seed=seed,
        flop=float(data["flop"]),
        samples={k: list(v) for k, v in data["samples"].items()},
        rounds=int(data.get("rounds", 0)),
        missing=dict(data.get("missing", {})),
    )


def load_remeasures(out: str) -> list[Remeasure]:
    """Every stored re-measurement, in the order of the bench's workloads and seeds."""
    bench = load_bench(out)
    found = []
    for workload in bench.get("workloads", []):
        for seed in bench.get("seeds", []):
            path = remeasure_path(out, workload, seed)
            if os.path.exists(path):
                found.append(_remeasure(workload, seed, path))
    return found


def load_earlier_remeasures(out: str) -> dict[tuple[str, int], list[Remeasure]]:
    """The earlier re-measurements (``seed<S>.json.bak-*``) per (workload, seed), oldest first.

    Each was made in a process of its own, with kernels built anew, before a strategy that
    finished later (or ``--remeasure-again``) made the bench re-measure everything again.
    """
    bench = load_bench(out)
    found: dict[tuple[str, int], list[Remeasure]] = {}
    for workload in bench.get("workloads", []):
        for seed in bench.get("seeds", []):
            path = remeasure_path(out, workload, seed)
            folder, name = os.path.split(path)
            if not os.path.isdir(folder):
                continue
            # (only the bench's own backups, name.bak-YYYYmmdd-HHMMSS; other files are notes)
            backups = [
                f
                for f in sorted(os.listdir(folder))
                if f.startswith(name) and _BACKUP.fullmatch(f, len(name))
            ]
            if backups:
                found[(workload, seed)] = [
                    _remeasure(workload, seed, os.path.join(folder, f)) for f in backups
                ]
    return found


# ------------------------------------------------------------------------------------------
# Writing: the folder lock, bench.json with its provenance, atomic JSON files


def lock_folder(out: str) -> WorkDirLock:
    """Hold ``DIR/.lock`` so that two benches never tune into the same folder at once.

    Returns the held lock; :meth:`~ms_droplet._lock.WorkDirLock.release` (or closing the
    ``with`` block) releases it.

    Raises
    ------
    BenchError
        When another process holds the lock (the message names it), or ``out`` cannot be
        created as a folder (it is a file, or not writable).
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise BenchError(f"--out {out!r} is a file, not a folder; give a folder (new or existing)")
    try:
        return lock_work_dir(
            out,
            owner="ms-droplet bench",
            fix=f"another `ms-droplet bench` is running into {out}; wait for it or use another "
            "--out",
        )
    except WorkDirLocked as err:
        raise BenchError(str(err)) from None
    except OSError as err:
        raise BenchError(f"--out {out!r} cannot be used as a folder: {err}") from None


def write_json(path: str, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (a crash leaves the old file or the new one).

    Strict JSON: a number that is not finite is written as null, never ``Infinity``.
    """
    _write_json(path, data)


def _merge_variants(out: str, stored: list, settings: dict[str, Any]) -> list:
    """The folder's droplet variants plus new ones; a known name with other settings is refused."""
    merged = {name: dict(value) for name, value in stored}
    for name, value in settings.get("variants", []):
        if name in merged and merged[name] != dict(value):
            raise BenchError(
                f"{out} has a droplet variant {name!r} with the settings {merged[name]}, not "
                f"{dict(value)}; give the new settings another name"
            )
        merged.setdefault(name, dict(value))
    return [[name, value] for name, value in merged.items()]


def write_bench_json(
    out: str, settings: dict[str, Any], *, target: str, command: str, machine: dict[str, Any]
) -> list[str]:
    """Create or extend ``DIR/bench.json``; return every strategy of the folder.

    Parameters
    ----------
    out : str
        The benchmark folder.
    settings : dict
        The :class:`~ms_droplet.bench._config.BenchConfig` as a dict.
    target : str
        The target, as ``str(target)``.
    command : str
        The command line of this invocation (appended to ``commands`` when new).
    machine : dict
        ``cpu_model``, ``cores``, ``tvm_version``, ``ms_droplet_version`` and ``python`` of this
        machine (:func:`ms_droplet._factories.machine_info`); added to ``machines`` when new.

    Raises
    ------
    BenchError
        When the folder holds a benchmark whose fixed settings (``FIXED_SETTINGS``) or target
        differ; its workloads, seeds and strategies are extended instead.
    """
    path = os.path.join(out, "bench.json")
    os.makedirs(out, exist_ok=True)
    settings = dict(settings)
    if os.path.exists(path):
        stored = _read_json(path)
        changed = [k for k in FIXED_SETTINGS if stored.get(k) != settings[k]]
        if stored.get("target") != target:
            changed.append("target")
        if changed:
            diff = ", ".join(
                f"{k}: {stored.get(k)!r} there, {settings.get(k, target)!r} now" for k in changed
            )
            raise BenchError(
                f"{out} holds a benchmark with other settings ({diff}); resume it with the "
                "same settings or use another --out"
            )
        for key in ("workloads", "seeds", "strategies"):
            merged = list(stored.get(key, []))
            merged += [x for x in settings[key] if x not in merged]
            settings[key] = merged
        settings["variants"] = _merge_variants(out, stored.get("variants", []), settings)
        machines = list(stored.get("machines", []))
        commands = list(stored.get("commands", []))
        if command and (not commands or commands[-1] != command):
            commands.append(command)
        created = stored.get("created")
    else:
        commands, created = [command] if command else [], time.strftime("%Y-%m-%dT%H:%M:%S%z")
        machines = []
    entry = {k: v for k, v in machine.items() if k != "python"}
    if entry not in machines:
        machines.append(entry)
    data = {
        **settings,
        "target": target,
        **machine,
        "created": created,
        "commands": commands,
        "machines": machines,
    }
    write_json(path, data)
    return list(settings["strategies"])
