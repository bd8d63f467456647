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
"""Helpers to inspect traces in tests: coordinates and one-coordinate differences."""

from __future__ import annotations

from tvm.s_tir.schedule import Trace

from ms_droplet._decisions import canonical_json


def coordinates(trace: Trace) -> dict[tuple[str, int], object]:
    """Sampling decisions and parallel annotations of a trace, by instruction index."""
    insts, decisions = canonical_json(trace)
    out: dict[tuple[str, int], object] = {}
    for idx, dec in decisions:
        out[("decision", idx)] = tuple(dec) if isinstance(dec, list) else dec
    for idx, inst in enumerate(insts):
        if inst[0] == "Annotate" and inst[2] == ["meta_schedule.parallel"]:
            out[("parallel", idx)] = inst[1][1]
    return out


def num_differences(a: dict, b: dict) -> int | None:
    """Coordinates in which two traces differ, or None if they are not comparable."""
    if a.keys() != b.keys():
        return None
    return sum(1 for k in a if a[k] != b[k])


def tile_products_ok(trace: Trace, extents: dict[int, int] | None = None) -> bool:
    """Every SamplePerfectTile decision is a perfect tiling of its loop."""
    insts, decisions = canonical_json(trace)
    for idx, dec in decisions:
        if insts[idx][0] == "SamplePerfectTile":
            prod = 1
            for f in dec:
                prod *= f
            if any(f < 1 for f in dec):
                return False
            if extents is not None and idx in extents and prod != extents[idx]:
                return False
            max_innermost = insts[idx][2][1]
            if max_innermost > 0 and dec[-1] > max_innermost:
                return False
    return True


def tile_extents(trace: Trace) -> dict[int, int]:
    """The loop extent behind each SamplePerfectTile (the product of its decision)."""
    insts, decisions = canonical_json(trace)
    out = {}
    for idx, dec in decisions:
        if insts[idx][0] == "SamplePerfectTile":
            prod = 1
            for f in dec:
                prod *= f
            out[idx] = prod
    return out
