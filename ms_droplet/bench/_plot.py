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
"""Convergence plots of a benchmark folder (best-so-far latency vs trials and vs wall time).

Everything is rebuilt from the files described in :mod:`ms_droplet.bench._layout`, so the plots
can be redrawn at any time, also while a benchmark is still running: unfinished runs are drawn
dashed. matplotlib is imported only when plotting, and only through its object-oriented API
(``Figure`` + the Agg canvas), so pyplot's global state is never touched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._config import STRATEGIES
from ._layout import Run, load_bench, load_runs, slug

__all__ = ["plot_bench", "series", "step_resample", "wall_steps"]

#: Points of the common wall-time grid on which the seeds of one strategy are resampled.
_WALL_POINTS = 200

_COLORS = {"droplet": "tab:blue", "evolutionary": "tab:orange", "post_opt": "tab:green"}
_EXTRA_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:gray", "tab:olive")
_LABELS = {"post_opt": "post_opt (TVM)"}

_MISSING_MPL = "plotting needs matplotlib: pip install 'ms_droplet[plot]'"


def step_resample(xs: Sequence[float], ys: Sequence[float], grid: Sequence[float]) -> np.ndarray:
    """Sample a right-continuous step function at the points of a grid.

    Parameters
    ----------
    xs : Sequence[float]
        The x of the steps, non-decreasing.
    ys : Sequence[float]
        The value from each ``xs[i]`` on (until the next step).
    grid : Sequence[float]
        Where to sample.

    Returns
    -------
    values : numpy.ndarray
        For each grid point, the value of the last step at or before it; NaN before the first
        step (no success yet), the last value after the last step (a run that stopped keeps its
        best).
    """
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    g = np.asarray(grid, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"xs and ys differ in length ({x.size} != {y.size})")
    out = np.full(g.shape, np.nan)
    if x.size == 0:
        return out
    idx = np.searchsorted(x, g, side="right") - 1
    seen = idx >= 0
    out[seen] = y[idx[seen]]
    return out


def wall_steps(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """Best-so-far ms as a step function of wall seconds, from the first success.

    Trials are taken in order of their ``wall_s`` (which need not follow the trial order), so
    the value at ``t`` is the best of the trials measured by ``t``.
    """
    walls = np.asarray([float(t["wall_s"]) for t in run.trials], dtype=float)
    ms = np.asarray(
        [np.inf if t.get("ms") is None else float(t["ms"]) for t in run.trials], dtype=float
    )
    order = np.argsort(walls, kind="stable")
    best = np.minimum.accumulate(ms[order]) if ms.size else ms
    seen = np.isfinite(best)
    return walls[order][seen], best[seen]


def _steps(run: Run, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """The best-so-far step function of one run along ``axis`` ("trials" or "wall")."""
    if axis == "wall":
        return wall_steps(run)
    nums, _, bests = run.curve()
    return np.asarray(nums, dtype=float), np.asarray(bests, dtype=float)


def series(
    runs: Sequence[Run], *, axis: str, wall_points: int = _WALL_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median, min and max best-so-far over the seeds of one strategy, on a common grid.

    Parameters
    ----------
    runs : Sequence[Run]
        The runs (one per seed) of one (workload, strategy).
    axis : str
        ``"trials"``: the grid is ``1 .. max trials``; ``"wall"``: ``wall_points`` evenly spaced
        seconds over ``0 .. max wall``. A single run is returned on its own points.
    wall_points : int
        Points of the wall-time grid.

    Returns
    -------
    grid, median, low, high : numpy.ndarray
        The x points and, at each, the median, minimum and maximum over the seeds that have a
        success by then (NaN where none has).
    """
    if axis not in ("trials", "wall"):
        raise ValueError(f"axis must be 'trials' or 'wall', not {axis!r}")
    if len(runs) == 1:
        xs, ys = _steps(runs[0], axis)
        return xs, ys, ys.copy(), ys.copy()
    if axis == "trials":
        n = max((len(r.trials) for r in runs), default=0)
        grid = np.arange(1, n + 1, dtype=float)
    else:
        end = max((float(t["wall_s"]) for r in runs for t in r.trials), default=0.0)
        grid = np.linspace(0.0, end, wall_points)
    stack = np.vstack([step_resample(*_steps(r, axis), grid) for r in runs])
    med = np.full(grid.shape, np.nan)
    low = np.full(grid.shape, np.nan)
    high = np.full(grid.shape, np.nan)
    some = np.isfinite(stack).any(axis=0)
    if some.any():
        med[some] = np.nanmedian(stack[:, some], axis=0)
        low[some] = np.nanmin(stack[:, some], axis=0)
        high[some] = np.nanmax(stack[:, some], axis=0)
    return grid, med, low, high


def _strategy_order(bench: dict[str, Any], runs: Sequence[Run]) -> list[str]:
    """Known strategies first (in :data:`STRATEGIES` order), then any others as they appear."""
    names = list(bench.get("strategies", STRATEGIES)) + [r.strategy for r in runs]
    known = [s for s in STRATEGIES if s in names]
    others = list(dict.fromkeys(s for s in names if s not in STRATEGIES))
    return known + others


def _color(strategy: str, others: list[str]) -> str:
    if strategy in _COLORS:
        return _COLORS[strategy]
    if strategy not in others:
        others.append(strategy)
    return _EXTRA_COLORS[others.index(strategy) % len(_EXTRA_COLORS)]


def _subtitle(bench: dict[str, Any], by_strategy: dict[str, list[Run]]) -> str:
    seeds = len(bench.get("seeds", [])) or max(len(v) for v in by_strategy.values())
    parts = []
    for strategy, runs in by_strategy.items():
        done = sum(r.finished for r in runs)
        text = f"{strategy} {len(runs)}"
        if done < len(runs):
            text += f" ({len(runs) - done} unfinished)"
        parts.append(text)
    line = f"{seeds} seed{'s' if seeds != 1 else ''}; runs: " + ", ".join(parts)
    if any(not r.finished for runs in by_strategy.values() for r in runs):
        line += "; dashed: unfinished"
    if any(len(runs) > 1 for runs in by_strategy.values()):
        line += "; band: min..max over seeds"
    return line


def plot_bench(out: str, *, dest: str | None = None) -> list[str]:
    """Draw the convergence of every strategy, one PNG per workload.

    Each PNG has two panels sharing the y axis: best-so-far latency (ms) against the number of
    measured trials, and against tuning wall seconds. There is one line per strategy: the
    median over seeds, with a band from the best to the worst seed when there are several.
    Seeds are compared on a common grid (every trial; 200 wall-time points), a seed that has
    stopped keeping its last best. Strategies with an unfinished run are drawn dashed.

    Parameters
    ----------
    out : str
        The benchmark folder (holding ``bench.json``).
    dest : str, optional
        Folder for the PNGs; ``<out>/plots`` by default. Created if missing.

    Returns
    -------
    paths : list[str]
        The written files, ``<dest>/<slug(workload)>.png``, in the bench's workload order.
        Workloads without any run are skipped.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
    except ImportError as err:
        raise ImportError(_MISSING_MPL) from err

    bench = load_bench(out)
    runs = load_runs(out)
    dest = os.path.join(out, "plots") if dest is None else dest
    os.makedirs(dest, exist_ok=True)
    order = _strategy_order(bench, runs)
    others: list[str] = []

    written = []
    for workload in bench.get("workloads", []):
        mine = [r for r in runs if r.workload == workload]
        if not mine:
            continue
        by_strategy = {s: [r for r in mine if r.strategy == s] for s in order}
        by_strategy = {s: rs for s, rs in by_strategy.items() if rs}

        fig = Figure(figsize=(12, 4.8), layout="constrained")
        FigureCanvasAgg(fig)
        ax_trials, ax_wall = fig.subplots(1, 2, sharey=True)
        values: list[np.ndarray] = []
        for strategy, srs in by_strategy.items():
            color = _color(strategy, others)
            style = "-" if all(r.finished for r in srs) else "--"
            label = _LABELS.get(strategy, strategy)
            for ax, axis in ((ax_trials, "trials"), (ax_wall, "wall")):
                grid, med, low, high = series(srs, axis=axis)
                if not np.isfinite(med).any():
                    continue
                ax.plot(
                    grid,
                    med,
                    drawstyle="steps-post",
                    linestyle=style,
                    color=color,
                    label=label if axis == "trials" else None,
                )
                if len(srs) > 1:
                    ax.fill_between(grid, low, high, step="post", color=color, alpha=0.2, lw=0)
                values.extend([low[np.isfinite(low)], high[np.isfinite(high)]])

        finite = np.concatenate(values) if values else np.empty(0)
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 3:
            ax_trials.set_yscale("log")  # shared with ax_wall
            ax_trials.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax_trials.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax_trials.yaxis.set_minor_formatter(NullFormatter())
        if not finite.size:
            for ax in (ax_trials, ax_wall):
                ax.text(0.5, 0.5, "no successful trial yet", ha="center", transform=ax.transAxes)
        ax_trials.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_trials.set_xlabel("trials")
        ax_wall.set_xlabel("tuning wall time (s)")
        ax_trials.set_ylabel("best-so-far latency (ms)")
        for ax in (ax_trials, ax_wall):
            ax.grid(True, which="both", alpha=0.3)
        if ax_trials.get_legend_handles_labels()[0]:
            ax_trials.legend(loc="best")
        fig.suptitle(f"{workload}\n{_subtitle(bench, by_strategy)}", fontsize=11)

        path = os.path.join(dest, f"{slug(workload)}.png")
        tmp = f"{path}.tmp"
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)  # a viewer watching a running bench never sees half a file
        written.append(path)
    return written
