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
"""``ms-droplet report``: tables and a JSON summary rebuilt from a benchmark folder, no tuning.

Latencies are the medians of the interleaved re-measurement (every strategy's best kernel of a
(workload, seed), timed alternately in one process with the same settings); ratios are taken per
(workload, seed) from those paired medians and averaged geometrically. The runner's latencies
recorded during tuning are never compared across runs: on a noisy machine they drift by tens of
percent between calls.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from .._files import replace_atomically, write_json
from .._intervals import geomean_interval, median_ci, paired_ratio, per_round
from .._stats import median
from ._config import AA_CONTROL, EVOLUTIONARY_AT_B, STRATEGIES, VARIANT_PREFIX
from ._layout import (
    Remeasure,
    Run,
    load_bench,
    load_earlier_remeasures,
    load_remeasures,
    load_runs,
)

__all__ = ["build_report", "geomean"]

_LABEL = {
    "droplet": "droplet",
    "evolutionary": "evolutionary",
    "post_opt": "post_opt (TVM)",
    EVOLUTIONARY_AT_B: "evolutionary, first B trials",
    AA_CONTROL: "droplet again (A/A control)",
}
#: Re-measured kernels that are not runs of their own.
_EXTRA = (EVOLUTIONARY_AT_B, AA_CONTROL)
_RATIOS = (
    ("droplet", "evolutionary"),
    ("droplet", EVOLUTIONARY_AT_B),
    ("droplet", "post_opt"),
    ("droplet", AA_CONTROL),
)


def _ratios(strategies: Sequence[str]) -> list[tuple[str, str]]:
    """The compared pairs: droplet's, then each variant against droplet and evolutionary."""
    pairs = list(_RATIOS)
    for s in strategies:
        if s.startswith(VARIANT_PREFIX):
            pairs += [(s, "droplet"), (s, "evolutionary"), (s, EVOLUTIONARY_AT_B)]
    return pairs


def _label(name: str) -> str:
    return _LABEL.get(name, name)


def geomean(xs: Sequence[float]) -> float:
    """Geometric mean of positive numbers."""
    if not xs:
        raise ValueError("geomean() needs at least one value")
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def build_report(out: str) -> tuple[str, dict[str, Any]]:
    """Build the markdown report and the JSON summary of a benchmark folder.

    Also writes them to ``out/report.md`` and ``out/summary.json``.

    Returns
    -------
    markdown : str
        Tables per workload and the summary with geometric means.
    summary : dict
        The same numbers, with the machine, TVM version, target, seeds and commands.
    """
    bench = load_bench(out)
    runs = {(r.workload, r.strategy, r.seed): r for r in load_runs(out)}
    remeasures = {(m.workload, m.seed): m for m in load_remeasures(out)}
    earlier = load_earlier_remeasures(out)
    stored = bench.get("strategies", STRATEGIES)
    strategies = [s for s in STRATEGIES if s in stored]
    strategies += [s for s in stored if s.startswith(VARIANT_PREFIX)]
    ratios = _ratios(strategies)
    workloads: dict[str, Any] = {}
    paired: dict[str, list[float]] = {}
    pair_ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in ratios}
    time_ratios: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in ratios if b not in _EXTRA}
    own_shares: dict[str, list[float]] = {}
    moved: dict[str, list[float]] = {}  # |log| of a paired ratio's change between processes
    over_processes: dict[str, list[float]] = {}
    for workload in bench["workloads"]:
        seeds: dict[str, Any] = {}
        for seed in bench["seeds"]:
            entry = _seed_entry(
                strategies,
                ratios,
                runs,
                remeasures.get((workload, seed)),
                workload,
                seed,
                explored=int(bench["num_evolutionary_trials"]),
                earlier=earlier.get((workload, seed), []),
            )
            if entry is None:
                continue
            for key, values in entry["paired_earlier"].items():
                now = entry["paired"][key]["ratio"]
                moved.setdefault(key, []).extend(abs(math.log(now / v)) for v in values)
            for key, value in entry["paired"].items():
                # the median over every process that re-measured the pair (this one alone if none)
                runs_of = [value["ratio"], *entry["paired_earlier"].get(key, [])]
                over_processes.setdefault(key, []).append(median(runs_of))
            seeds[str(seed)] = entry
            for key, value in entry["ratios"].items():
                pair_ratios[key].append(value)
            for key, value in entry["paired"].items():
                paired.setdefault(key, []).append(value["ratio"])
            for key, value in entry["time_ratios"].items():
                time_ratios[key].append(value)
            for name, item in entry["strategies"].items():
                if "strategy_share" in item:
                    own_shares.setdefault(name, []).append(item["strategy_share"])
        if seeds:
            workloads[workload] = {"seeds": seeds}
    summary = {
        "bench": bench,
        "workloads": workloads,
        "geomean": {
            "latency": {k: geomean(v) for k, v in pair_ratios.items() if v},
            "tuning_time": {k: geomean(v) for k, v in time_ratios.items() if v},
            "pairs": {k: len(v) for k, v in pair_ratios.items()},
            "paired": {k: geomean(v) for k, v in paired.items() if v},
            # per pair the median of the paired ratio over all its re-measurement processes
            "paired_over_processes": {k: geomean(v) for k, v in over_processes.items() if v},
            # the latest process's paired ratios: geometric mean, t-interval and p over pairs
            "paired_interval": {k: geomean_interval(v) for k, v in paired.items() if v},
        },
        # the strategy's own time / its tuning time, per strategy: the largest and the mean
        "strategy_time_share": {
            k: {"max": max(v), "mean": sum(v) / len(v), "runs": len(v)}
            for k, v in own_shares.items()
        },
        # how far a paired ratio moved between re-measurements in separate processes (the same
        # kernels, built anew): the noise floor a single re-measurement does not show
        "between_process": {
            k: {
                "comparisons": len(v),
                "median_change": math.exp(median(v)) - 1.0,
                "max_change": math.exp(max(v)) - 1.0,
            }
            for k, v in moved.items()
        },
    }
    markdown = _markdown(
        bench,
        strategies,
        ratios,
        workloads,
        summary["geomean"],
        summary["strategy_time_share"],
        summary["between_process"],
    )
    replace_atomically(os.path.join(out, "report.md"), markdown.encode("utf-8"))
    write_json(os.path.join(out, "summary.json"), summary)  # strict JSON: inf/nan become null
    return markdown, summary


def _seed_entry(
    strategies: list[str],
    ratios: list[tuple[str, str]],
    runs: dict[tuple[str, str, int], Run],
    remeasure: Remeasure | None,
    workload: str,
    seed: int,
    explored: int,
    earlier: Sequence[Remeasure] = (),
) -> dict[str, Any] | None:
    found = {s: runs.get((workload, s, seed)) for s in strategies}
    if not any(found.values()):
        return None
    entry: dict[str, Any] = {"strategies": {}, "ratios": {}, "time_ratios": {}}
    flop = remeasure.flop if remeasure else None
    for strategy, run in found.items():
        item: dict[str, Any] = {"status": "not started"}
        if run is not None:
            result = run.result
            item = {
                "status": "finished" if run.finished else "running or interrupted",
                "trials": result.get("trials", len(run.trials)),
                "budget": result.get("budget"),
                "failed_trials": result.get(
                    "failed_trials", sum(1 for t in run.trials if t.get("ms") is None)
                ),
                "tuning_seconds": result.get(
                    "tuning_seconds", run.trials[-1]["wall_s"] if run.trials else 0.0
                ),
                "error": result.get("error"),
            }
            for key in (
                "strategy_seconds",
                "descents",
                "moves",
                "final_pick_is_incumbent",
                "pick_is_lowest",
                "final_batch",
            ):
                if key in result:
                    item[key] = result[key]
            if result.get("strategy_seconds") is not None and item["tuning_seconds"] > 0:
                item["strategy_share"] = result["strategy_seconds"] / item["tuning_seconds"]
            if strategy == "post_opt" and run.finished:
                tried = run.trials[explored:]
                item["post_opt_candidates"] = len(tried)
                item["post_opt_failed"] = sum(1 for t in tried if t.get("ms") is None)
        if remeasure and strategy in remeasure.samples:
            item.update(_latency(remeasure.samples[strategy], flop, remeasure.rounds))
        elif remeasure and strategy in remeasure.missing:
            item["error"] = item.get("error") or f"no kernel: {remeasure.missing[strategy]}"
        entry["strategies"][strategy] = item
    if remeasure and "numpy" in remeasure.samples:
        entry["numpy"] = _latency(remeasure.samples["numpy"], flop, remeasure.rounds)
    entry["extra"] = {
        name: _latency(remeasure.samples[name], flop, remeasure.rounds)
        for name in _EXTRA
        if remeasure and name in remeasure.samples
    }
    entry["paired"] = {}
    entry["paired_earlier"] = {}
    items = {**entry["strategies"], **entry["extra"]}
    for a, b in ratios:
        if "median_ms" in items.get(a, {}) and "median_ms" in items.get(b, {}):
            entry["ratios"][f"{a}/{b}"] = items[a]["median_ms"] / items[b]["median_ms"]
            assert remeasure is not None
            entry["paired"][f"{a}/{b}"] = paired_ratio(
                remeasure.samples[a], remeasure.samples[b], remeasure.rounds
            )
            before = [
                paired_ratio(m.samples[a], m.samples[b], m.rounds)["ratio"]
                for m in earlier
                if a in m.samples and b in m.samples and m.rounds
            ]
            if before:
                entry["paired_earlier"][f"{a}/{b}"] = before
        if b in _EXTRA:
            continue
        if items.get(a, {}).get("status") == items.get(b, {}).get("status") == "finished":
            ta, tb = items[a]["tuning_seconds"], items[b]["tuning_seconds"]
            if ta > 0 and tb > 0:
                entry["time_ratios"][f"{a}/{b}"] = ta / tb
    return entry


def _latency(samples: list[float], flop: float | None, rounds: int) -> dict[str, Any]:
    med = median(samples)
    # Samples of one round are taken back to back and are correlated: the interval comes from
    # the per-round medians, which are close to independent.
    lo, hi = median_ci(per_round(samples, rounds))
    out = {
        "median_ms": med * 1e3,
        "ci95_ms": [lo * 1e3, hi * 1e3],
        "samples": len(samples),
    }
    if flop:
        out["gflops"] = flop / med / 1e9
    return out


def _descent_note(item: dict[str, Any]) -> str:
    """Descents, moves, own time and final pick of a droplet run ("" for other strategies)."""
    if "descents" not in item:
        return ""
    own = item.get("strategy_share")
    note = f"{item['descents']} descent(s), {item['moves']} move(s)"
    if own is not None:
        note += f", own time {100 * own:.1f} %"
    if item.get("final_batch"):
        note += ", picked by a final batch"
    if item.get("pick_is_lowest") is False:
        note += ", the pick is not the database's lowest record (what stock TVM compiles)"
    elif "pick_is_lowest" not in item and item.get("final_pick_is_incumbent") is False:
        note += ", the database's best is not the incumbent"
    return note


def _fmt(x: float | None, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def _over_pairs(intervals: dict[str, Any]) -> list[str]:
    """The latest process's paired ratios over (workload, seed) pairs, A/A control first."""
    if not intervals:
        return []
    lines = [
        "",
        "## Paired ratios over (workload, seed) pairs",
        "",
        "Each pair's paired per-round ratio from its latest re-measurement; geometric mean over "
        "the pairs, 95 % Student-t interval over their logs and the t-test's p against 1 (the "
        "pairs are the samples: this interval is the one to read against the A/A row, the "
        "noise floor).",
        "",
        "| paired ratio | pairs | geometric mean | 95 % t-interval | p | below 1 in |",
        "|---|---|---|---|---|---|",
    ]
    keys = sorted(intervals, key=lambda k: (not k.endswith(AA_CONTROL), k))
    for key in keys:
        v = intervals[key]
        ci = "-" if v["ci"] is None else f"{v['ci'][0]:.3f}-{v['ci'][1]:.3f}"
        p = "-" if v["p"] is None else f"{v['p']:.2g}"
        floor = " (noise floor)" if key.endswith(AA_CONTROL) else ""
        lines.append(
            f"| {key}{floor} | {v['pairs']} | {v['geomean']:.3f} | {ci} | {p} | "
            f"{v['below_one']} of {v['pairs']} |"
        )
    return lines


def _markdown(
    bench: dict[str, Any],
    strategies: list[str],
    ratios: list[tuple[str, str]],
    workloads: dict[str, Any],
    geo: dict[str, Any],
    shares: dict[str, Any],
    between: dict[str, Any],
) -> str:
    k, b, n = bench["ratio"], bench["trials"], bench["num_evolutionary_trials"]
    lines = [
        "# ms-droplet benchmark",
        "",
        f"- machine: {bench.get('cpu_model')} ({bench.get('cores')} cores); target "
        f"`{bench.get('target')}`",
        f"- TVM {bench.get('tvm_version')}, ms_droplet {bench.get('ms_droplet_version')}, "
        f"Python {bench.get('python')}",
        f"- budgets per workload: droplet {b} trials ({n} explored by EvolutionarySearch, then "
        f"the descent); evolutionary {k}x{b} = {k * b}; post_opt (TVM "
        f"{bench.get('tvm_version')}'s `post_optimization`) {n} explored + up to {b - n} of its "
        "Droplet",
        f"- seeds: {', '.join(str(s) for s in bench['seeds'])}; runner number={bench['number']} "
        f"repeat={bench['repeat']} min_repeat_ms={bench['min_repeat_ms']}; "
        f"{bench['rounds']} interleaved re-measurement rounds",
        *(f"- command: `{c}`" for c in bench.get("commands", []) if c),
        *(
            f"- variant `{VARIANT_PREFIX}{name}`: droplet with `{json.dumps(settings)}`"
            for name, settings in bench.get("variants", [])
        ),
        *(
            f"- {_label(name)}'s own time (neighbours, replay, cost-model ranking): "
            f"{100 * v['mean']:.2f} % of its tuning time on average, at most "
            f"{100 * v['max']:.2f} % ({v['runs']} runs)"
            for name, v in shares.items()
        ),
        "",
        "Latency: median of the interleaved re-measurement of each strategy's kernel (droplet's "
        "pick where its run kept one in droplet_picks.json, else the lowest record) "
        "[95 % CI of the median, from the per-round medians]. Ratios below 1 mean droplet's "
        "kernel is faster (latency) or droplet tuned for less time (time); per (workload, "
        "seed), geometric means over them.",
        "",
        "## Summary",
        "",
    ]
    head = ["workload"]
    head += [f"{_label(s)} ms" for s in strategies]
    present = set(strategies) | {
        name for data in workloads.values() for e in data["seeds"].values() for name in e["extra"]
    }
    ratio_keys = [f"{a}/{b}" for a, b in ratios if a in present and b in present]
    time_keys = [k for k in ratio_keys if k.split("/", 1)[1] not in _EXTRA]
    head += [f"latency {key}" for key in ratio_keys]
    head += [f"time {key}" for key in time_keys]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for workload, data in workloads.items():
        seeds = data["seeds"].values()
        row = [f"`{workload}`"]
        for s in strategies:
            meds = [
                e["strategies"][s]["median_ms"] for e in seeds if "median_ms" in e["strategies"][s]
            ]
            row.append(_fmt(median(meds)) if meds else "pending")
        for group, keys in (("ratios", ratio_keys), ("time_ratios", time_keys)):
            for key in keys:
                vals = [e[group][key] for e in seeds if key in e[group]]
                row.append(_fmt(geomean(vals), ".3f") if vals else "-")
        lines.append("| " + " | ".join(row) + " |")
    row = ["**geometric mean**"] + [""] * len(strategies)
    row += [_fmt(geo["latency"].get(key), ".3f") for key in ratio_keys]
    row += [_fmt(geo["tuning_time"].get(key), ".3f") for key in time_keys]
    lines.append("| " + " | ".join(row) + " |")
    lines += _over_pairs(geo["paired_interval"])
    if between:
        lines += [
            "",
            "## Between processes",
            "",
            "The same kernels re-measured in separate processes (each builds them anew; the "
            "earlier re-measurements are kept as `seed<S>.json.bak-*`): how far each paired "
            "ratio moved from an earlier process to the latest. A per-workload difference "
            "inside this spread is not a result.",
            "",
            "| paired ratio | comparisons | median change | largest change |",
            "|---|---|---|---|",
        ]
        for key, v in between.items():
            lines.append(
                f"| {key} | {v['comparisons']} | {100 * v['median_change']:.1f} % | "
                f"{100 * v['max_change']:.1f} % |"
            )
        lines += [
            "",
            "Geometric mean over pairs of each pair's median over its processes (the latest "
            "process alone in the summary table above):",
            "",
            *(
                f"- {key}: {_fmt(geo['paired_over_processes'].get(key), '.3f')} (latest "
                f"process: {_fmt(geo['paired'].get(key), '.3f')})"
                for key in between
            ),
        ]
    for workload, data in workloads.items():
        lines += ["", f"## `{workload}`", ""]
        head = ["seed", "strategy", "latency ms [95 % CI]", "GFLOP/s", "trials / budget"]
        head += ["failed", "tuning time s", "note"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for seed, entry in data["seeds"].items():
            for s in strategies:
                item = entry["strategies"][s]
                lat = (
                    f"{item['median_ms']:.4f} [{item['ci95_ms'][0]:.4f}, {item['ci95_ms'][1]:.4f}]"
                    if "median_ms" in item
                    else "not re-measured yet"
                )
                note = item.get("error") or ("" if item["status"] == "finished" else item["status"])
                tried, failed = item.get("post_opt_candidates"), item.get("post_opt_failed")
                if tried:
                    note = note or (
                        f"all {tried} candidates of its Droplet failed: this is the best of its "
                        f"{n} explored trials"
                        if failed == tried
                        else f"{failed} of {tried} Droplet candidates failed"
                    )
                if item["status"] == "finished" and item.get("trials", 0) < (
                    item.get("budget") or 0
                ):
                    note = note or "stopped before the budget"
                note = "; ".join(x for x in (note, _descent_note(item)) if x)
                lines.append(
                    f"| {seed} | {_label(s)} | {lat} | {_fmt(item.get('gflops'), '.2f')} | "
                    f"{item.get('trials', '-')} / {item.get('budget', '-')} | "
                    f"{item.get('failed_trials', '-')} | {_fmt(item.get('tuning_seconds'), '.1f')} "
                    f"| {note} |"
                )
            for name, item in entry["extra"].items():
                lines.append(
                    f"| {seed} | {_label(name)} | {item['median_ms']:.4f} "
                    f"[{item['ci95_ms'][0]:.4f}, {item['ci95_ms'][1]:.4f}] | "
                    f"{_fmt(item.get('gflops'), '.2f')} | | | | same process, interleaved |"
                )
            for key, pr in entry["paired"].items():
                note = f"{pr['rounds']} rounds"
                note += " (noise floor)" if key.endswith(AA_CONTROL) else ""
                if key in entry["paired_earlier"]:
                    note += "; earlier processes: " + ", ".join(
                        f"{v:.3f}" for v in entry["paired_earlier"][key]
                    )
                lines.append(
                    f"| {seed} | paired per-round ratio {key} | {pr['ratio']:.3f} "
                    f"[{pr['ci95'][0]:.3f}, {pr['ci95'][1]:.3f}] | | | | | {note} |"
                )
            if "numpy" in entry:
                npy = entry["numpy"]
                lines.append(
                    f"| {seed} | numpy matmul (reference) | {npy['median_ms']:.4f} "
                    f"[{npy['ci95_ms'][0]:.4f}, {npy['ci95_ms'][1]:.4f}] | "
                    f"{_fmt(npy.get('gflops'), '.2f')} | | | | same process, interleaved |"
                )
    lines.append("")
    return "\n".join(lines)
