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
"""Coordinates and neighbours of real MetaSchedule traces (no measuring)."""

from __future__ import annotations

import pytest
import tvm_ffi
from tvm import te
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.testing import te_workload
from tvm.s_tir.schedule import Trace

from ms_droplet._candidates import CandidateCache
from ms_droplet._decisions import Change, apply_change, moves, retilings, trace_key
from ms_droplet._records import samples_of

from ._traces import coordinates, num_differences, tile_extents, tile_products_ok


def _context(mod, target, seed=5):
    return ms.TuneContext(
        mod=mod,
        target=target,
        space_generator="post-order-apply",
        search_strategy="evolutionary",
        rand_state=seed,
    )


# Function scope: generate_design_space() advances the context's random state, so a shared
# context would give each test other traces depending on which tests ran before it.
@pytest.fixture
def conv_ctx(target):
    mod = te.create_prim_func(te_workload.conv2d_nhwc(1, 14, 14, 16, 16, 3, 1, 1))
    return _context(mod, target)


@pytest.fixture
def matmul_ctx(matmul64, target):
    return _context(matmul64, target)


def _traces(ctx, n=4):
    # Design spaces carry sampled decisions; a few seeds give a few different points.
    out = []
    for sch in ctx.generate_design_space():
        out.append(sch.trace)
    cache = CandidateCache(ctx.mod, list(ctx.space_generator.postprocs), 1)
    valid = []
    for tr in out:
        sch = cache.replay(tr)
        if sch is not None:
            valid.append(sch.trace)
    assert valid, "no design space replays"
    return valid[:n], cache


@pytest.mark.parametrize("step", [1, 2, 3])
def test_moves_keep_tiles_perfect_and_change_one_coordinate(matmul_ctx, conv_ctx, step):
    for ctx in (matmul_ctx, conv_ctx):
        traces, _ = _traces(ctx)
        for trace in traces:
            extents = tile_extents(trace)
            base = coordinates(trace)
            mvs = moves(trace, step, max_parallel_extent=32)
            assert mvs or step > 1
            for mv in mvs:
                assert tile_products_ok(mv.trace, extents), mv.label
                assert num_differences(base, coordinates(mv.trace)) == 1, mv.label


def test_a_moves_change_reproduces_it_and_two_changes_combine(conv_ctx):
    traces, _ = _traces(conv_ctx, n=1)
    trace = traces[0]
    base = coordinates(trace)
    mvs = moves(trace, 1, max_parallel_extent=32)
    for mv in mvs:  # every kind of coordinate, annotations included
        assert trace_key(apply_change(trace, mv.change)) == trace_key(mv.trace), mv.label
    pairs = [(a, b) for a in mvs for b in mvs if a.change.index < b.change.index]
    assert pairs, "no two coordinates to combine"
    for a, b in pairs[:40]:
        both = apply_change(apply_change(trace, a.change), b.change)
        assert num_differences(base, coordinates(both)) == 2, (a.label, b.label)
        assert num_differences(coordinates(a.trace), coordinates(both)) == 1
        assert num_differences(coordinates(b.trace), coordinates(both)) == 1
        # the order of the two changes does not matter
        other = apply_change(apply_change(trace, b.change), a.change)
        assert trace_key(other) == trace_key(both)


def test_retilings_reach_every_perfect_tiling_of_one_loop(matmul_ctx, conv_ctx):
    for ctx in (matmul_ctx, conv_ctx):
        traces, _ = _traces(ctx, n=2)
        for trace in traces:
            extents = tile_extents(trace)
            base = coordinates(trace)
            near = {
                trace_key(mv.trace)
                for s in (1, 2, 3)
                for mv in moves(trace, s, max_parallel_extent=32)
            }
            listed = retilings(trace, limit=10_000, seed=1)
            assert len({trace_key(mv.trace) for mv in listed}) == len(listed)  # no repeats
            for mv in listed:
                assert tile_products_ok(mv.trace, extents), mv.label
                assert num_differences(base, coordinates(mv.trace)) == 1, mv.label
                assert trace_key(apply_change(trace, mv.change)) == trace_key(mv.trace)
            far = [mv for mv in listed if trace_key(mv.trace) not in near]
            assert far, "every retiling is a step move: nothing new"
            # each tile decision gets every ordered factorisation of its extent but its own
            spt = [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]
            for inst in spt:
                k = list(trace.insts).index(inst)
                tiles = [int(x) for x in trace.get_decision(inst)]
                mine = [mv for mv in listed if mv.change.index == k]
                if len(tiles) == 2 and int(inst.attrs[1]) <= 0:
                    extent = tiles[0] * tiles[1]
                    assert len(mine) == sum(extent % d == 0 for d in range(1, extent + 1)) - 1
                assert all(mv.change.value != tiles for mv in mine)


def test_retilings_draw_at_most_limit_per_loop_from_the_seed(matmul_ctx):
    traces, _ = _traces(matmul_ctx, n=1)
    trace = traces[0]
    every = retilings(trace, limit=10_000, seed=1)
    per_loop = {}
    for mv in every:
        per_loop[mv.change.index] = per_loop.get(mv.change.index, 0) + 1
    assert max(per_loop.values()) > 5
    drawn = retilings(trace, limit=5, seed=1)
    assert all(sum(mv.change.index == k for mv in drawn) == min(5, n) for k, n in per_loop.items())
    assert [mv.label for mv in drawn] == [mv.label for mv in retilings(trace, limit=5, seed=1)]
    assert [mv.label for mv in drawn] != [mv.label for mv in retilings(trace, limit=5, seed=2)]
    assert {mv.label for mv in drawn} <= {mv.label for mv in every}


def test_coordinate_kinds_cover_the_mutators(conv_ctx):
    traces, _ = _traces(conv_ctx)
    labels = {
        mv.label.split("#")[0] for tr in traces for mv in moves(tr, 1, max_parallel_extent=32)
    }
    assert {"tile", "categorical", "parallel"} <= labels, labels
    kinds = {inst.kind.name for tr in traces for inst in tr.insts}
    if "SampleComputeLocation" in kinds:
        assert "compute_location" in labels


def test_compute_locations_are_the_valid_decisions_and_moves_step_along_them(conv_ctx):
    traces, cache = _traces(conv_ctx)
    checked = 0
    for trace in traces:
        locations = cache.compute_locations(trace)
        for k, valid in locations.items():
            current = int(trace.get_decision(trace.insts[k]))
            assert current in valid and -1 in valid and valid == sorted(set(valid))
            assert any(loc >= 0 for loc in valid), valid  # some loop, not only inline/root
            for loc in range(-2, valid[-1] + 3):  # a valid location replays as asked
                sch = cache.replay(apply_change(trace, Change(k, loc)))
                taken = None if sch is None else int(sch.trace.get_decision(sch.trace.insts[k]))
                if loc in valid:
                    assert taken in (None, loc), (loc, taken)
                else:
                    assert taken != loc, (loc, valid)

            def reached(step, far=False, locs=locations, index=k, trace=trace):
                mvs = moves(trace, step, max_parallel_extent=32, locations=locs, far=far)
                return {mv.change.value for mv in mvs if mv.change.index == index}

            pos = valid.index(current)
            assert reached(1) == {valid[i] for i in (pos - 1, pos + 1) if 0 <= i < len(valid)}
            every = reached(1) | reached(2) | reached(3, far=True)
            assert every == set(valid) - {current}
            # index steps (no locations) reach fewer of them
            by_index = reached(1, locs=None) | reached(2, locs=None) | reached(3, locs=None)
            assert len(by_index & set(valid)) < len(every), (by_index, valid)
            checked += 1
    assert checked, "no SampleComputeLocation in the conv's design spaces"


def test_candidates_are_replayed_with_postprocs_and_deduplicated(matmul_ctx):
    traces, cache = _traces(matmul_ctx, n=1)
    start = cache.replay(traces[0])
    cache.claim(start)
    cache.seen.add(trace_key(start.trace))
    built = [cache.candidate(mv.trace) for mv in moves(start.trace, 1, max_parallel_extent=32)]
    fresh = [b for b in built if b is not None]
    assert fresh, "no valid neighbour"
    # One schedule, one candidate: moves that build the same module (e.g. two tilings that
    # postprocessing makes equal) get the candidate of the first, so keys and modules pair up.
    keys = list(dict.fromkeys(k for k, _ in fresh))
    hashes = [(k, tvm_ffi.structural_hash(sch.mod)) for k, sch in fresh]
    module_of = dict(hashes)
    assert all(module_of[k] == h for k, h in hashes)
    assert len(set(module_of.values())) == len(keys)
    for key, sch in fresh:
        assert key != trace_key(start.trace)
        insts = [i.kind.name for i in sch.trace.insts]
        assert "EnterPostproc" in insts  # postprocs ran on the candidate
    # Asking again before they are measured gives the same candidates (a challenger's
    # speculative neighbours are its neighbours again once it is the incumbent) ...
    again = [cache.candidate(mv.trace) for mv in moves(start.trace, 1, max_parallel_extent=32)]
    assert list(dict.fromkeys(b[0] for b in again if b is not None)) == keys
    # ... and nothing once they are measured.
    cache.seen.update(keys)
    again = [cache.candidate(mv.trace) for mv in moves(start.trace, 1, max_parallel_extent=32)]
    assert all(b is None for b in again)


def test_one_schedule_is_one_candidate_whichever_trace_builds_it(matmul_ctx):
    traces, cache = _traces(matmul_ctx, n=1)
    start = cache.replay(traces[0])
    cache.claim(start)  # built first, not measured yet
    first = {trace_key(start.trace): tvm_ffi.structural_hash(start.mod)}
    # some moves give a schedule another trace built first (e.g. an unroll or parallel value
    # that changes nothing here): while that trace is unmeasured they are its candidate ...
    same = []
    for step in (1, 2, 3):
        for mv in moves(start.trace, step, max_parallel_extent=32):
            built = cache.candidate(mv.trace)
            if built is None:
                continue
            key, sch = built
            assert trace_key(sch.trace) == key  # the schedule measured is the key's trace
            if key == trace_key(mv.trace):
                first[key] = tvm_ffi.structural_hash(sch.mod)
            else:
                assert first[key] == tvm_ffi.structural_hash(sch.mod)
                same.append(mv)
    assert same, "no two traces give the same schedule: nothing to check"
    # ... and once every first one is measured they are rejected.
    cache.seen.update(first)
    for mv in same:
        assert cache.candidate(mv.trace) is None
        assert trace_key(mv.trace) in cache.invalid


def test_invalid_trace_is_remembered_not_raised(matmul_ctx):
    traces, cache = _traces(matmul_ctx, n=1)
    trace = traces[0]
    spt = next(i for i in trace.insts if i.kind.name == "SamplePerfectTile")
    # A decision whose innermost factor breaks the limit is rejected by replay or postprocs or
    # fixed up by SamplePerfectTile; either way it is never measured twice: rejected for good,
    # or one candidate (one key) until it is measured.
    bad = trace.with_decision(spt, [1, 1, 1, 64], remove_postproc=True)
    first = cache.candidate(bad)
    if first is None:
        assert cache.candidate(bad) is None
        assert trace_key(bad) in cache.invalid
    else:
        assert cache.candidate(bad)[0] == first[0]
        cache.seen.add(first[0])
        assert cache.candidate(bad) is None


def test_trace_key_is_stable_across_json_round_trip(matmul_ctx):
    traces, _ = _traces(matmul_ctx, n=1)
    trace = traces[0]
    sch = Schedule(matmul_ctx.mod)
    Trace.apply_json_to_schedule(trace.as_json(remove_postproc=True), sch)
    assert trace_key(sch.trace) == trace_key(trace)
    other = moves(trace, 1, max_parallel_extent=32)[0].trace
    assert trace_key(other) != trace_key(trace)


def test_failed_measurements_are_not_latencies():
    assert samples_of(None) is None
    assert samples_of([1e10]) is None
    assert samples_of([0.001, 1e10]) is None
    assert samples_of([]) is None
    assert samples_of([0.002, 0.001]) == [0.002, 0.001]
