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
"""Trace <-> coordinates: which decisions the descent changes and how.

A coordinate is a sampling decision of the trace (``SamplePerfectTile``, ``SampleCategorical``,
``SampleComputeLocation``) or the value of a ``meta_schedule.parallel`` annotation: exactly what
MetaSchedule's own mutators (tile size, unroll, compute location, parallel) change, so the descent
searches the space the evolutionary search samples from.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tvm
import tvm_ffi
from tvm.s_tir.schedule import Instruction, Trace

__all__ = [
    "Change",
    "Move",
    "apply_change",
    "canonical_json",
    "moves",
    "retilings",
    "trace_key",
]

_PARALLEL = "meta_schedule.parallel"


@dataclass(frozen=True)
class Change:
    """One coordinate's new value: instruction ``index`` of a trace gets ``value``.

    ``value`` is a decision (tile factors, a categorical index, a compute location) or, with
    ``annotation``, the value of a ``meta_schedule.parallel`` annotation.
    """

    index: int
    value: Any
    annotation: bool = False


@dataclass(frozen=True)
class Move:
    """One neighbouring trace: ``label`` says which coordinate changed and how, ``change`` what."""

    label: str
    trace: Trace
    change: Change


def apply_change(trace: Trace, change: Change) -> Trace:
    """A copy of ``trace`` (postprocs removed) with one more coordinate changed.

    Moves keep the instructions of a trace, only decisions and annotation values differ, so the
    ``Change`` of one neighbour applies to another neighbour of the same incumbent: that is how
    two moves combine. Not validated here: replay the result.
    """
    if change.annotation:
        return _with_input(trace, change.index, int(change.value))
    return trace.with_decision(trace.insts[change.index], change.value, remove_postproc=True)


def canonical_json(trace: Trace) -> Any:
    """The trace without postprocs as plain JSON values: ``[instructions, decisions]``."""
    return _canon(trace.as_json(remove_postproc=True))


def _canon(obj: Any) -> Any:
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, tvm.tirx.IntImm | tvm.tirx.FloatImm):
        return obj.value
    if isinstance(obj, list | tuple | tvm_ffi.Array):
        return [_canon(x) for x in obj]
    if isinstance(obj, dict | tvm_ffi.Map):
        return {str(_canon(k)): _canon(v) for k, v in obj.items()}
    return tvm.ir.save_json(obj)


def trace_key(trace: Trace) -> str:
    """A stable fingerprint of a trace: its instructions and decisions, postprocs removed.

    The key does not depend on object identity (random variables are renamed in order by
    ``Trace.as_json``), so the trace of a database record and the same trace rebuilt in another
    process have the same key.
    """
    payload = json.dumps(canonical_json(trace), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _divisors(n: int) -> list[int]:
    return [d for d in range(2, n + 1) if n % d == 0]


def _tile_moves(k: int, tiles: list[int], max_innermost: int, step: int) -> Iterator[tuple]:
    """Move the ``step``-th smallest divisor of one factor to another position.

    The product of the factors (the loop extent) never changes, so every move is a perfect tile.
    """
    n = len(tiles)
    for i in range(n):
        divs = _divisors(tiles[i])
        if len(divs) < step:
            continue
        d = divs[step - 1]
        for j in range(n):
            if i == j:
                continue
            new = list(tiles)
            new[i] //= d
            new[j] *= d
            if max_innermost > 0 and new[-1] > max_innermost:
                continue
            yield f"tile#{k}[{i}->{j}]x{d}", new


def _tilings(extent: int, n: int, max_innermost: int) -> list[tuple[int, ...]]:
    """Every ordered factorisation of ``extent`` into ``n`` factors (innermost bounded)."""
    if n == 1:
        return [(extent,)] if max_innermost <= 0 or extent <= max_innermost else []
    out = []
    for d in [1, *_divisors(extent)]:
        out.extend((d, *rest) for rest in _tilings(extent // d, n - 1, max_innermost))
    return out


def retilings(trace: Trace, *, limit: int, seed: int) -> list[Move]:
    """List the traces whose tiling of one loop is re-partitioned in any perfect way.

    A step move (:func:`moves`) shifts one divisor between two factors; a retiling replaces the
    whole ``SamplePerfectTile`` decision by another perfect tiling of the same extent (the
    innermost factor bounded as the instruction asks), so a loop can jump to a distant tiling
    in one move. The tilings of each decision are all listed, or, when there are more than
    ``limit``, ``limit`` of them drawn with ``seed``. Meant to be ranked by a cost model: there
    are hundreds (220 for a 4-level tiling of 512).

    Parameters
    ----------
    trace : Trace
        The incumbent's trace.
    limit : int
        Most tilings listed per tile decision.
    seed : int
        Seed of the draw when a decision has more than ``limit`` tilings.

    Returns
    -------
    moves : list[Move]
        The retiled traces, postprocs removed, not validated: replay them.
    """
    out = []
    for k, inst in enumerate(trace.insts):
        decision = trace.get_decision(inst)
        if inst.kind.name != "SamplePerfectTile" or decision is None:
            continue
        tiles = tuple(int(x) for x in decision)
        options = [
            t for t in _tilings(math.prod(tiles), len(tiles), int(inst.attrs[1])) if t != tiles
        ]
        if len(options) > limit:
            options = random.Random(f"{seed}:{k}").sample(options, limit)
        for new in options:
            label = f"retile#{k}({','.join(str(x) for x in new)})"
            change = Change(k, list(new))
            out.append(Move(label, apply_change(trace, change), change))
    return out


def moves(
    trace: Trace,
    step: int,
    *,
    max_parallel_extent: int,
    locations: Mapping[int, Sequence[int]] | None = None,
    far: bool = False,
) -> list[Move]:
    """List the traces that differ from ``trace`` in one coordinate by ``step``.

    Parameters
    ----------
    trace : Trace
        The incumbent's trace.
    step : int
        1 for the nearest neighbours; larger steps move further along each coordinate.
    max_parallel_extent : int
        Upper bound of a ``meta_schedule.parallel`` annotation (cores x jobs per core).
    locations : Mapping[int, Sequence[int]], optional
        The valid decisions of ``SampleComputeLocation`` instructions by instruction index,
        ascending (``CandidateCache.compute_locations``): a compute location then moves
        ``step`` places along that list (inline, root, the loops where compute-at is valid).
        Without it (or for an instruction not in it) the decision index moves by ``step``,
        and most such indices are not valid locations.
    far : bool
        With ``locations``: also every valid location more than ``step`` places away (for the
        widest step, so that e.g. inline and a deep loop are one move apart).

    Returns
    -------
    moves : list[Move]
        The neighbouring traces, postprocs removed. They are not validated here: replay them.
    """
    changes: list[tuple[str, Change]] = []
    for k, inst in enumerate(trace.insts):
        name = inst.kind.name
        decision = trace.get_decision(inst)
        if name == "SamplePerfectTile" and decision is not None:
            tiles = [int(x) for x in decision]
            max_innermost = int(inst.attrs[1])
            for label, new in _tile_moves(k, tiles, max_innermost, step):
                changes.append((label, Change(k, new)))
        elif name == "SampleCategorical" and decision is not None:
            n_cand = len(inst.attrs[0])
            for sign in (-1, 1):
                idx = int(decision) + sign * step
                if 0 <= idx < n_cand:
                    changes.append((f"categorical#{k}{sign * step:+d}", Change(k, idx)))
        elif name == "SampleComputeLocation" and decision is not None:
            valid = (locations or {}).get(k)
            deltas = [-step, step]
            if far and valid is not None:
                deltas += [d for d in range(-len(valid), len(valid) + 1) if abs(d) > step]
            for delta in deltas:
                loc = _location_step(int(decision), delta, valid)
                if loc is not None:
                    changes.append((f"compute_location#{k}{delta:+d}", Change(k, loc)))
        elif name == "Annotate" and str(inst.attrs[0]) == _PARALLEL:
            value = inst.inputs[1]
            if not isinstance(value, tvm.tirx.IntImm):
                continue
            cur = int(value)
            for label, new in (("x", cur << step), ("/", cur >> step)):
                if 1 <= new <= max_parallel_extent and new != cur:
                    change = Change(k, new, annotation=True)
                    changes.append((f"parallel#{k}{label}{1 << step}", change))
        elif decision is not None:
            continue  # another sampling instruction: not a coordinate (yet)
    return [Move(label, apply_change(trace, change), change) for label, change in changes]


def _location_step(current: int, delta: int, valid: Sequence[int] | None) -> int | None:
    """The compute location ``delta`` places from ``current`` (None: off the end).

    -2 is inline, -1 root, >= 0 a loop index. With ``valid`` (ascending) the move steps along
    the valid locations; else along the decision index.
    """
    if valid is None or current not in valid:
        loc = current + delta
        return loc if loc >= -2 else None
    pos = list(valid).index(current) + delta
    return valid[pos] if 0 <= pos < len(valid) else None


def _with_input(trace: Trace, index: int, value: int) -> Trace:
    """A copy of ``trace`` (postprocs removed) whose annotation ``index`` has a new value."""
    insts = []
    decisions = {}
    for k, inst in enumerate(trace.insts):
        if inst.kind.name == "EnterPostproc":
            break
        if k == index:
            old = inst
            inst = Instruction(
                old.kind,
                [old.inputs[0], tvm.tirx.IntImm("int32", value)],
                old.attrs,
                old.outputs,
            )
        insts.append(inst)
        dec = trace.get_decision(trace.insts[k])
        if dec is not None:
            decisions[inst] = dec
    return Trace(insts, decisions)
