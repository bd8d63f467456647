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
"""What ``tune_onnx`` reports: :class:`ModelTuneReport` (``report.json``, ``report.md``, the
printed summary) and the errors it raises with a report or a fix in their message."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILDS", "RATIOS", "ModelTuneReport", "OutputMismatchError", "TuneModelError"]

#: Timed builds, in the order of the timing rounds; ``tuned (A/A)`` is the tuned library
#: timed a second time, so that the reader sees the noise floor.
BUILDS = ("onnxruntime", "untuned", "tuned", "tuned (A/A)")
#: Ratios reported, each (numerator, denominator): > 1 means the denominator is faster.
RATIOS = (("onnxruntime", "tuned"), ("untuned", "tuned"), ("tuned (A/A)", "tuned"))


class TuneModelError(ValueError):
    """The work dir cannot hold this tuning (another model, shapes or target; a damaged
    database); the message names the fix."""


class OutputMismatchError(RuntimeError):
    """The tuned build's outputs differ from onnxruntime's beyond the tolerances.

    Attributes
    ----------
    report : ModelTuneReport
        The report (also written to ``work_dir``), with the comparisons.
    """

    def __init__(self, message: str, report: ModelTuneReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class ModelTuneReport:
    """What :func:`tune_onnx` did, also written to ``work_dir/report.json``.

    Latencies are medians of the interleaved samples in milliseconds, with a 95 % confidence
    interval of the median from the per-round medians; ratios are medians of the per-round
    ratios with their 95 % confidence interval.
    """

    model: str
    model_sha256: str
    inputs: list[dict[str, Any]]
    outputs: list[str]
    target: str
    num_cores: int
    machine: dict[str, Any]
    work_dir: str
    library: str | None
    num_tasks: int
    max_trials_global: int
    trials_in_database: int
    trials_this_run: int
    failed_trials_this_run: int
    tuning_seconds_this_run: float
    tuning_seconds_total: float
    strategy: str
    num_evolutionary_trials: int | None
    num_trials_per_iter: int
    seed: int
    check: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    command: str = ""

    @property
    def passed(self) -> bool:
        """True when the tuned build's outputs matched onnxruntime's (or were not checked)."""
        return bool(self.check.get("tuned", {}).get("passed", True))

    def format(self) -> str:
        """The plain-text summary ``ms-droplet tune-model`` prints."""
        lines = [
            f"model: {self.model}   inputs: "
            + ", ".join(f"{i['name']}:{'x'.join(map(str, i['shape']))}" for i in self.inputs),
            f"target: {self.target}   tasks: {self.num_tasks}",
            f"trials: {self.trials_in_database} in the database (budget "
            f"{self.max_trials_global}); this run: {self.trials_this_run} "
            f"({self.failed_trials_this_run} failed) in {self.tuning_seconds_this_run:.1f} s; "
            f"tuning time over all runs: {self.tuning_seconds_total:.1f} s",
        ]
        lines.append(_format_check(self.check))
        lines.extend(_format_timing(self.timing))
        if self.library:
            lines.append(f"library: {self.library}   (tvm.runtime.load_module + relax VM)")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as markdown (``work_dir/report.md``)."""
        out = [
            f"# ms-droplet tune-model: {os.path.basename(self.model)}",
            "",
            f"- command: `{self.command}`" if self.command else "- called from Python",
            f"- model: `{self.model}` (sha256 `{self.model_sha256[:16]}...`)",
            "- inputs: "
            + ", ".join(
                f"`{i['name']}` {'x'.join(map(str, i['shape']))} {i['dtype']}" for i in self.inputs
            ),
            f"- target: `{self.target}`, {self.num_cores} cores; machine: "
            f"{self.machine.get('cpu')}, TVM {self.machine.get('tvm')}, onnxruntime "
            f"{self.machine.get('onnxruntime')}",
            f"- strategy: {self.strategy} (explore {self.num_evolutionary_trials} trials per "
            f"task), {self.num_trials_per_iter} trials per batch, seed {self.seed}",
            f"- trials: {self.trials_in_database} in the database (budget "
            f"{self.max_trials_global}), {self.trials_this_run} in this run "
            f"({self.failed_trials_this_run} failed); tuning time "
            f"{self.tuning_seconds_this_run:.1f} s this run, "
            f"{self.tuning_seconds_total:.1f} s over all runs",
            f"- library: `{self.library}`" if self.library else "- library: not written",
            "",
            "## Output check against onnxruntime",
            "",
            _format_check(self.check),
            "",
        ]
        comps = self.check.get("comparisons", [])
        if comps:
            out += [
                "| build | output | shape | max abs diff | max rel diff | passed |",
                "|---|---|---|---|---|---|",
            ]
            for c in comps:
                out.append(
                    f"| {c['build']} | `{c['name']}` | {'x'.join(map(str, c['shape']))} | "
                    f"{c['max_abs_diff']:.3g} | {c['max_rel_diff']:.3g} | {c['passed']} |"
                )
            out.append("")
        out += ["## End-to-end latency (interleaved, one process)", ""]
        timing = self.timing
        if timing.get("builds"):
            out += [
                f"{timing['rounds']} rounds x {timing['repeat']} samples, order rotated every "
                f"round ({', '.join(BUILDS)}); onnxruntime with {timing['onnxruntime_threads']} "
                f"intra-op threads, TVM with {timing['tvm_threads']} threads.",
                "",
                "| build | median (ms) | 95 % CI (ms) |",
                "|---|---|---|",
            ]
            for name, b in timing["builds"].items():
                lo, hi = b["ci95_ms"]
                out.append(f"| {name} | {b['median_ms']:.3f} | {lo:.3f} - {hi:.3f} |")
            out += ["", "| ratio (per-round, median) | value | 95 % CI |", "|---|---|---|"]
            for name, r in timing["ratios"].items():
                lo, hi = r["ci95"]
                out.append(f"| {name} | {r['median']:.3f} | {lo:.3f} - {hi:.3f} |")
        else:
            out.append(timing.get("skipped", "not timed"))
        out += ["", "## Tasks", "", "| task | weight | trials | best (us) |", "|---|---|---|---|"]
        for t in self.tasks:
            best = "-" if t["best_us"] is None else f"{t['best_us']:.2f}"
            out.append(f"| `{t['name']}` | {t['weight']} | {t['trials']} | {best} |")
        return "\n".join(out) + "\n"


def _format_check(check: Mapping[str, Any]) -> str:
    if not check.get("comparisons"):
        return f"output check: {check.get('skipped', 'not done')}"
    parts = []
    for build in ("tuned", "untuned"):
        item = check.get(build)
        if item:
            verdict = "matches" if item["passed"] else "DOES NOT MATCH"
            parts.append(f"{build} {verdict} (max |diff| {item['max_abs_diff']:.3g})")
    return (
        f"output check vs onnxruntime (rtol={check['rtol']:g}, atol={check['atol']:g}, seed "
        f"{check['seed']}): " + "; ".join(parts)
    )


def _format_timing(timing: Mapping[str, Any]) -> list[str]:
    if not timing.get("builds"):
        return [f"end-to-end latency: {timing.get('skipped', 'not timed')}"]
    lines = [
        f"end-to-end latency, interleaved ({timing['rounds']} rounds x {timing['repeat']} "
        "samples; median [95 % CI]):"
    ]
    for name, b in timing["builds"].items():
        lo, hi = b["ci95_ms"]
        lines.append(f"  {name:<12} {b['median_ms']:10.3f} ms  [{lo:.3f}, {hi:.3f}]")
    for name, r in timing["ratios"].items():
        lo, hi = r["ci95"]
        lines.append(f"  {name:<22} {r['median']:7.3f}x  [{lo:.3f}, {hi:.3f}]")
    return lines
