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
"""Tests of the benchmark convergence plots (:func:`ms_droplet.bench._plot.plot_bench`).

A synthetic benchmark folder is written in the layout of :mod:`ms_droplet.bench._layout`
(failures, an unfinished run, seeds of different lengths, a workload without runs); the
resampling of best-so-far step functions onto a common grid is checked against hand-computed
values.
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ms_droplet.bench._layout import Run, run_dir, slug
from ms_droplet.bench._plot import plot_bench, series, step_resample, wall_steps

# matplotlib is an optional dependency; the resampling helpers do not need it.
needs_matplotlib = pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None, reason="matplotlib is not installed"
)

WL_A = "matmul:64,64,64"
WL_B = "conv2d:1,8,8"
WL_EMPTY = "dense:1,2"

# Two droplet seeds of different lengths, with failures (ms None).
DROPLET_SEED0 = [(None, 0.5), (4.0, 1.0), (5.0, 1.5), (2.0, 2.0), (None, 2.5)]
DROPLET_SEED1 = [(3.0, 1.0), (None, 2.0), (1.0, 3.0)]


def _trials(pairs: list[tuple[float | None, float]]) -> list[dict[str, Any]]:
    return [{"ms": ms, "wall_s": wall} for ms, wall in pairs]


def _write_run(
    out: Path,
    workload: str,
    strategy: str,
    seed: int,
    pairs: list[tuple[float | None, float]],
    *,
    finished: bool = True,
) -> None:
    path = run_dir(str(out), workload, strategy, seed)
    os.makedirs(path)
    with open(os.path.join(path, "trials.jsonl"), "w", encoding="utf-8") as f:
        for t in _trials(pairs):
            f.write(json.dumps(t) + "\n")
    if finished:
        best = min(ms for ms, _ in pairs if ms is not None)
        with open(os.path.join(path, "result.json"), "w", encoding="utf-8") as f:
            json.dump({"best_ms": best, "trials": len(pairs)}, f)


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    out = tmp_path / "bench"
    out.mkdir()
    bench = {
        "workloads": [WL_A, WL_B, WL_EMPTY],
        "strategies": ["droplet", "evolutionary", "post_opt"],
        "seeds": [0, 1],
    }
    (out / "bench.json").write_text(json.dumps(bench), encoding="utf-8")
    _write_run(out, WL_A, "droplet", 0, DROPLET_SEED0)
    _write_run(out, WL_A, "droplet", 1, DROPLET_SEED1)
    _write_run(out, WL_A, "evolutionary", 0, [(9.0, 0.4), (6.0, 0.9), (None, 1.3), (5.5, 2.2)])
    # Still running: no result.json yet.
    _write_run(out, WL_A, "evolutionary", 1, [(None, 0.3), (8.0, 0.8)], finished=False)
    _write_run(out, WL_A, "post_opt", 0, [(7.0, 0.7), (3.5, 1.6), (3.0, 2.4)])
    _write_run(out, WL_B, "droplet", 0, [(0.9, 0.2), (0.8, 0.4), (0.85, 0.6)])
    return out


def _png_size(path: str) -> tuple[int, int]:
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


# --------------------------------------------------------------------------------------------
# plot_bench


@needs_matplotlib
def test_plot_bench_writes_one_png_per_workload_with_runs(bench_dir: Path) -> None:
    paths = plot_bench(str(bench_dir))
    dest = bench_dir / "plots"
    assert paths == [str(dest / f"{slug(WL_A)}.png"), str(dest / f"{slug(WL_B)}.png")]
    for p in paths:
        assert os.path.isfile(p)
        width, height = _png_size(p)
        assert width > height  # two panels side by side
    assert not (dest / f"{slug(WL_EMPTY)}.png").exists()
    assert sorted(os.listdir(dest)) == sorted(os.path.basename(p) for p in paths)


@needs_matplotlib
def test_plot_bench_custom_dest(bench_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "elsewhere" / "pngs"
    paths = plot_bench(str(bench_dir), dest=str(dest))
    assert [os.path.dirname(p) for p in paths] == [str(dest)] * 2
    assert all(os.path.isfile(p) for p in paths)
    assert not (bench_dir / "plots").exists()


@needs_matplotlib
def test_plot_bench_run_without_success(tmp_path: Path) -> None:
    out = tmp_path / "b"
    out.mkdir()
    bench = {"workloads": [WL_A], "strategies": ["droplet"], "seeds": [0]}
    (out / "bench.json").write_text(json.dumps(bench), encoding="utf-8")
    _write_run(out, WL_A, "droplet", 0, [(None, 0.5), (None, 1.0)], finished=False)
    [path] = plot_bench(str(out))
    _png_size(path)


@needs_matplotlib
def test_plot_bench_does_not_touch_pyplot(bench_dir: Path) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    plot_bench(str(bench_dir))
    if not had_pyplot:
        assert "matplotlib.pyplot" not in sys.modules


@needs_matplotlib
def test_plot_bench_not_a_bench_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"bench\.json"):
        plot_bench(str(tmp_path))


def test_plot_bench_without_matplotlib(bench_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"pip install 'ms_droplet\[plot\]'"):
        plot_bench(str(bench_dir))


# --------------------------------------------------------------------------------------------
# resampling


def test_step_resample_hand_values() -> None:
    got = step_resample([2, 4, 7], [5.0, 3.0, 1.0], [0, 1, 2, 3, 4, 6.9, 7, 10])
    # before the first step: NaN; at a step: its value; after the last: the last value
    expected = [np.nan, np.nan, 5.0, 5.0, 3.0, 3.0, 1.0, 1.0]
    np.testing.assert_array_equal(got, expected)


def test_step_resample_empty_and_mismatch() -> None:
    assert np.isnan(step_resample([], [], [0.0, 1.0])).all()
    with pytest.raises(ValueError, match="differ in length"):
        step_resample([1, 2], [1.0], [0.0])


def _run(pairs: list[tuple[float | None, float]], seed: int = 0) -> Run:
    return Run(WL_A, "droplet", seed, True, {}, _trials(pairs))


def test_series_trials_two_seeds_of_different_lengths() -> None:
    runs = [_run(DROPLET_SEED0, 0), _run(DROPLET_SEED1, 1)]
    grid, med, low, high = series(runs, axis="trials")
    # seed 0 best-so-far per trial: [nan, 4, 4, 2, 2]; seed 1: [3, 3, 1] then held at 1
    np.testing.assert_array_equal(grid, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(med, [3.0, 3.5, 2.5, 1.5, 1.5])
    np.testing.assert_array_equal(low, [3.0, 3.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(high, [3.0, 4.0, 4.0, 2.0, 2.0])


def test_series_wall_two_seeds() -> None:
    runs = [_run(DROPLET_SEED0, 0), _run(DROPLET_SEED1, 1)]
    grid, med, low, high = series(runs, axis="wall", wall_points=4)
    # grid 0..3 s (the latest wall_s); seed 0: [nan, 4, 2, 2]; seed 1: [nan, 3, 3, 1]
    np.testing.assert_array_equal(grid, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(med, [np.nan, 3.5, 2.5, 1.5])
    np.testing.assert_array_equal(low, [np.nan, 3.0, 2.0, 1.0])
    np.testing.assert_array_equal(high, [np.nan, 4.0, 3.0, 2.0])


def test_series_single_seed_uses_its_own_points() -> None:
    grid, med, low, high = series([_run(DROPLET_SEED0)], axis="trials")
    np.testing.assert_array_equal(grid, [2, 3, 4, 5])
    np.testing.assert_array_equal(med, [4.0, 4.0, 2.0, 2.0])
    np.testing.assert_array_equal(low, med)
    np.testing.assert_array_equal(high, med)
    with pytest.raises(ValueError, match="axis"):
        series([_run(DROPLET_SEED0)], axis="seconds")


def test_wall_steps_follow_wall_order() -> None:
    # The second trial finished first (wall 1.0): at 1 s only its 3 ms is known.
    walls, bests = wall_steps(_run([(None, 0.5), (2.0, 2.0), (3.0, 1.0)]))
    np.testing.assert_array_equal(walls, [1.0, 2.0])
    np.testing.assert_array_equal(bests, [3.0, 2.0])


def test_series_median_of_three_seeds() -> None:
    runs = [_run(DROPLET_SEED0, 0), _run(DROPLET_SEED1, 1), _run([(10.0, 0.5)], 2)]
    grid, med, low, high = series(runs, axis="trials")
    # per trial: seed 0 [nan, 4, 4, 2, 2], seed 1 [3, 3, 1, 1, 1], seed 2 [10] held at 10
    np.testing.assert_array_equal(grid, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(med, [6.5, 4.0, 4.0, 2.0, 2.0])
    np.testing.assert_array_equal(low, [3.0, 3.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(high, [10.0] * 5)
