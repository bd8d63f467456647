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
"""What a benchmark runs: :class:`BenchConfig`, and the error of a benchmark that cannot run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AA_CONTROL",
    "COST_MODEL_WARMUP",
    "EVOLUTIONARY_AT_B",
    "FIXED_SETTINGS",
    "START_FROM",
    "STRATEGIES",
    "VARIANT_PREFIX",
    "BenchConfig",
    "BenchError",
    "parse_variant",
]

#: Strategies of the benchmark, in the order tables and plots show them.
STRATEGIES = ("droplet", "evolutionary", "post_opt")
#: A droplet variant (an ablation) is the strategy ``droplet-NAME``.
VARIANT_PREFIX = "droplet-"
_VARIANT_NAME = re.compile(r"[a-z0-9_]{1,32}")
#: Re-measured kernel: the best of the evolutionary run's first B trials (equal budget).
EVOLUTIONARY_AT_B = "evolutionary@B"
#: Re-measured kernel: droplet's best kernel timed a second time (the A/A noise floor).
AA_CONTROL = "droplet (A/A)"

#: A variant's own key (not a DropletStrategy setting): whose explored trials it starts from,
#: droplet's (the default; an ablation of the descent) or evolutionary's (droplet continuing
#: evolutionary's own trajectory: droplet@B and evolutionary@B then share their explored trials).
START_FROM = "start_from"
_START_FROM_VALUES = ("droplet", "evolutionary")
#: A variant's own key: the variant tunes with ``XGBModel(num_warmup_samples=N)`` instead of TVM's
#: default cost model (whose warm-up is 100 records): from N records on, its booster scores
#: EvolutionarySearch's candidates and the neighbours instead of random numbers.
COST_MODEL_WARMUP = "cost_model_warmup"
_VARIANT_KEYS = (START_FROM, COST_MODEL_WARMUP)

#: Settings that must not change when a benchmark folder is resumed or extended.
FIXED_SETTINGS = (
    "trials",
    "ratio",
    "num_evolutionary_trials",
    "num_trials_per_iter",
    "pvalue",
    "number",
    "repeat",
    "min_repeat_ms",
    "rounds",
)


class BenchError(ValueError):
    """A benchmark that cannot run as asked (bad settings, a folder of another benchmark)."""


@dataclass(frozen=True)
class BenchConfig:
    """What to run.

    Attributes
    ----------
    workloads : tuple[str, ...]
        Workload specs.
    seeds : tuple[int, ...]
        Tuning seeds; every strategy runs once per seed.
    trials : int
        ``B``: droplet's total budget per workload (and post_opt's).
    ratio : int
        ``K``: evolutionary search gets ``K * B`` trials.
    num_evolutionary_trials : int
        ``N``: trials explored by droplet (and post_opt) before the descent, ``N < B``.
    strategies : tuple[str, ...]
        A subset of ``("droplet", "evolutionary", "post_opt")``, plus ``droplet-NAME`` for
        each of ``variants``.
    num_trials_per_iter, pvalue, number, repeat, min_repeat_ms, rounds
        Task scheduler batch, droplet's significance level, runner settings (also used by the
        re-measurement) and the rounds of the interleaved re-measurement.
    variants : tuple[tuple[str, dict], ...]
        Droplet variants for an ablation: ``(NAME, settings)`` runs strategy ``droplet-NAME``, a
        :class:`~ms_droplet.DropletStrategy` with droplet's settings updated by ``settings``
        (e.g. ``("norank", {"rank_neighbours": False})``), with droplet's budget B.
    """

    workloads: tuple[str, ...]
    seeds: tuple[int, ...]
    trials: int
    ratio: int = 5
    num_evolutionary_trials: int = 32
    strategies: tuple[str, ...] = STRATEGIES
    num_trials_per_iter: int = 32
    pvalue: float = 0.05
    number: int = 3
    repeat: int = 3
    min_repeat_ms: int = 100
    rounds: int = 10
    variants: tuple[tuple[str, dict[str, Any]], ...] = ()

    def __post_init__(self) -> None:
        if not self.workloads:
            raise BenchError("no workloads: give --suite or --workload")
        if not self.seeds:
            raise BenchError("no seeds: give --seeds, e.g. --seeds 0 1 2")
        names = [name for name, _ in self.variants]
        if len(set(names)) != len(names):
            raise BenchError(f"a variant name is given twice: {names}")
        known = [*STRATEGIES, *(VARIANT_PREFIX + name for name in names)]
        unknown = [s for s in self.strategies if s not in known]
        if unknown or not self.strategies:
            raise BenchError(f"unknown strategies {unknown}: choose from {known}")
        if self.trials < 1 or self.ratio < 1 or self.rounds < 1:
            raise BenchError("trials, ratio and rounds must be >= 1")
        if not 1 <= self.num_evolutionary_trials < self.trials:
            raise BenchError(
                f"num_evolutionary_trials ({self.num_evolutionary_trials}) must be >= 1 "
                f"and below the budget --trials ({self.trials}), or nothing is left for the "
                "descent"
            )

    def droplet_settings(self, strategy: str) -> dict[str, Any]:
        """The :class:`~ms_droplet.DropletStrategy` settings of ``droplet`` or a variant."""
        settings: dict[str, Any] = {
            "num_evolutionary_trials": self.num_evolutionary_trials,
            "pvalue": self.pvalue,
        }
        variant = self._variant(strategy)
        settings.update({k: v for k, v in variant.items() if k not in _VARIANT_KEYS})
        return settings

    def start_from(self, strategy: str) -> str | None:
        """The strategy whose explored trials a variant starts from (None for the others)."""
        if not strategy.startswith(VARIANT_PREFIX):
            return None
        return self._variant(strategy).get(START_FROM, "droplet")

    def cost_model_warmup(self, strategy: str) -> int | None:
        """A variant's ``cost_model_warmup`` (None: TVM's default cost model)."""
        return self._variant(strategy).get(COST_MODEL_WARMUP)

    def _variant(self, strategy: str) -> dict[str, Any]:
        """The JSON settings of variant ``droplet-NAME`` ({} for droplet and the others)."""
        if not strategy.startswith(VARIANT_PREFIX):
            return {}
        return dict(self.variants)[strategy[len(VARIANT_PREFIX) :]]

    def budget(self, strategy: str) -> int:
        """Total trials of a strategy on one workload."""
        return self.trials * self.ratio if strategy == "evolutionary" else self.trials


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME=JSON`` (e.g. ``norank={"rank_neighbours": false}``) as ``(NAME, settings)``.

    The settings are checked by constructing a :class:`~ms_droplet.DropletStrategy` with them;
    ``"start_from"`` (``"droplet"`` or ``"evolutionary"``: whose explored trials it starts from)
    and ``"cost_model_warmup"`` (an int >= 1: the variant's ``XGBModel`` scores with its booster
    from that many records on) are the variant's own keys.

    Raises
    ------
    BenchError
        A bad name, JSON that is not an object, or settings DropletStrategy refuses.
    """
    name, sep, raw = text.partition("=")
    if not sep or not _VARIANT_NAME.fullmatch(name):
        raise BenchError(
            f"--variant {text!r}: give NAME=JSON with NAME of lower-case letters, digits and _ "
            """(at most 32), e.g. --variant 'norank={"rank_neighbours": false}'"""
        )
    try:
        settings = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BenchError(f"--variant {name}: the settings are not JSON ({err})") from None
    if not isinstance(settings, dict):
        raise BenchError(f"--variant {name}: the settings must be a JSON object, got {raw!r}")
    start = settings.get(START_FROM, "droplet")
    if start not in _START_FROM_VALUES:
        raise BenchError(
            f"--variant {name}: {START_FROM} must be one of {list(_START_FROM_VALUES)}, got "
            f"{start!r}"
        )
    warmup = settings.get(COST_MODEL_WARMUP)
    bad = isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1
    if warmup is not None and bad:
        raise BenchError(
            f"--variant {name}: {COST_MODEL_WARMUP} must be an int >= 1 (records before the cost "
            f"model's booster scores candidates), got {warmup!r}"
        )
    from .._strategy import DropletStrategy

    try:
        DropletStrategy(**{k: v for k, v in settings.items() if k not in _VARIANT_KEYS})
    except (TypeError, ValueError) as err:
        raise BenchError(f"--variant {name}: {err}") from None
    return name, settings
