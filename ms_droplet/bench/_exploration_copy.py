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
"""A droplet variant's start from another run's exploration: what to copy, and the copy.

A bench variant (``droplet-*``) does not explore by luck of its own: it starts from the first
records and trial lines of droplet's run (or evolutionary's, for a variant that starts from
it) of the same (workload, seed). :func:`exploration_to_copy` decides how many, by replaying
DropletStrategy's adaptive switch on that run's records in trial order
(:func:`exploration_length`, :func:`switch_point`); :func:`copy_exploration` writes them into
the variant's work dir, so the ablation compares descents, not exploration luck.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from .._records import find_workload, first_records, is_failure, latency
from .._strategy import DropletStrategy, stagnation_step
from ._config import BenchConfig
from ._layout import open_run_database, read_trials

__all__ = ["copy_exploration", "exploration_length", "exploration_to_copy", "switch_point"]

#: ``num_warmup_samples`` of TVM's default cost model (``XGBModel``), which the bench tunes with.
_XGB_WARMUP = (
    inspect.signature(ms.cost_model.XGBModel.__init__).parameters["num_warmup_samples"].default
)

logger = logging.getLogger(__name__)


def exploration_to_copy(
    source: str,
    config: BenchConfig,
    strategy: str,
    *,
    mod: tvm.IRModule,
) -> tuple[list[ms.database.TuningRecord], list[dict[str, Any]], bool] | None:
    """The first records and trial lines of ``source`` a variant starts from, or None (it explores).

    How many: droplet's exploration rule replayed on the source run's records in trial order
    (:func:`exploration_length`): at most N trials, ending early after a full batch once the
    best mean latency has not improved by 1 % for ``stagnation_trials`` trials (DropletStrategy's
    adaptive switch). For droplet's own run this is where its exploration ended (droplet's
    settings); for evolutionary's it is where the variant's own rule would have switched to the
    descent on that trajectory. A variant whose own ``num_evolutionary_trials`` is smaller copies
    only that many. The flag: the variant explores on from the copy itself (up to its own N),
    because droplet stopped exploring where the variant would not have: droplet's switch rule
    fired on a trajectory where the variant's (e.g. ``stagnation_after_warmup``) would not, or
    droplet reached its N and the variant's N is larger.

    Parameters
    ----------
    source : str
        The work dir of the run the variant starts from (droplet's or evolutionary's).
    config : BenchConfig
        The benchmark's settings (N, the batch size, the variant's settings).
    strategy : str
        The variant (``droplet-*``).
    mod : IRModule
        The workload, to find in the source run's database.

    Returns
    -------
    copy : tuple[list[TuningRecord], list[dict[str, Any]], bool] or None
        The records and trial lines to copy, in trial order, and whether the variant explores
        on from them; None when ``source`` has no finished run or fewer than N trials (the
        variant then explores itself; a warning says so).
    """
    if not os.path.exists(os.path.join(source, "result.json")):
        logger.warning(
            "no finished run in %s to start %s from: the variant explores", source, strategy
        )
        return None
    whose = "droplet" if config.start_from(strategy) == "droplet" else strategy
    patience, warmup = _switch_rule(config, whose)
    wl = find_workload(open_run_database(source), mod)
    n = config.num_evolutionary_trials
    records = [] if wl is None else first_records(source, wl, n)
    trials = read_trials(os.path.join(source, "trials.jsonl"))[:n]
    if len(records) < n or len(trials) < n:
        logger.warning("%s has fewer than %d trials: %s explores", source, n, strategy)
        return None
    means = [math.inf if is_failure(r) else latency(r.run_secs) for r in records]
    per_batch = config.num_trials_per_iter
    count = exploration_length(means, per_batch=per_batch, patience=patience, warmup=warmup)
    own_n = config.droplet_settings(strategy)["num_evolutionary_trials"]
    count = min(count, own_n)  # a variant exploring less than droplet copies only its own N
    explore_on = False
    if whose != strategy and count < own_n:
        # Droplet stopped exploring (its switch rule, or its N) before the variant would have.
        own_patience, own_warmup = _switch_rule(config, strategy)
        explore_on = (
            switch_point(
                means[:count], per_batch=per_batch, patience=own_patience, warmup=own_warmup
            )
            is None
        )
    return records[:count], trials[:count], explore_on


def _switch_rule(config: BenchConfig, strategy: str) -> tuple[int | None, int]:
    """``stagnation_trials`` and the warm-up its count waits for, of droplet or a variant."""
    rule = DropletStrategy(**config.droplet_settings(strategy))
    # The bench tunes with XGBModel: TVM's default warm-up, or the variant's cost_model_warmup.
    warmup = config.cost_model_warmup(strategy) or _XGB_WARMUP
    return rule.stagnation_trials, warmup if rule.stagnation_after_warmup else 0


def exploration_length(
    means: Sequence[float], *, per_batch: int, patience: int | None, warmup: int = 0
) -> int:
    """Where DropletStrategy's adaptive switch ends an exploration with these trial latencies.

    The best mean latency has to improve by 1 % to reset the count of trials since the best;
    the switch is checked before each batch, so the exploration ends after the first full
    batch at which ``patience`` trials have passed without such a gain (``len(means)`` if
    never; ``patience=None`` never switches early). A failed trial is ``math.inf``. With
    ``warmup`` (``stagnation_after_warmup``: the cost model's ``num_warmup_samples``), the
    trials of a batch that starts before ``warmup`` records were measured do not count: the
    strategy sees a cost model still warming up when that batch's results arrive.

    Parameters
    ----------
    means : Sequence[float]
        The mean latency of every trial, in trial order (``math.inf`` for a failure).
    per_batch : int
        Trials per batch (``num_trials_per_iter``).
    patience : int, optional
        ``stagnation_trials``; None never switches early.
    warmup : int
        A batch's trials count only if ``warmup`` records were measured before it started
        (0: all count).

    Returns
    -------
    length : int
        The number of trials the exploration takes.
    """
    point = switch_point(means, per_batch=per_batch, patience=patience, warmup=warmup)
    return len(means) if point is None else point


def switch_point(
    means: Sequence[float], *, per_batch: int, patience: int | None, warmup: int = 0
) -> int | None:
    """The trial count at which :func:`exploration_length`'s switch happens, or None (never).

    Parameters
    ----------
    means : Sequence[float]
        The mean latency of every trial, in trial order (``math.inf`` for a failure).
    per_batch : int
        Trials per batch (``num_trials_per_iter``).
    patience : int, optional
        ``stagnation_trials``; None never switches.
    warmup : int
        A batch's trials count only if ``warmup`` records were measured before it started
        (0: all count).

    Returns
    -------
    point : int or None
        The trial count after which the switch happens; None if it never does on ``means``.
    """
    best, since = math.inf, 0
    for i, mean in enumerate(means):
        best, since = stagnation_step(best, since, mean)
        if (i // per_batch) * per_batch < warmup:
            since = 0
        if patience is not None and (i + 1) % per_batch == 0 and since >= patience:
            return i + 1
    return None


def copy_exploration(
    work_dir: str,
    records: list[ms.database.TuningRecord],
    trials: list[dict[str, Any]],
    *,
    mod: tvm.IRModule,
) -> None:
    """Start a droplet variant from another run's first records and trial lines.

    They are copied, so the variant explores nothing itself (its ``num_evolutionary_trials`` is
    their number) and starts its descent from the same explored kernels: the ablation compares
    descents, not exploration luck, and a variant that starts from evolutionary's trials
    continues evolutionary's own trajectory.

    Parameters
    ----------
    work_dir : str
        The variant's work dir.
    records : list[TuningRecord]
        The records to copy (of :func:`exploration_to_copy`), committed in this order.
    trials : list[dict[str, Any]]
        The trial lines to copy; they replace the variant's ``trials.jsonl``.
    mod : IRModule
        The workload the records are committed under.
    """
    # The trial lines first, the records last: a copy cut short is redone (the trial file is
    # rewritten) until the database exists, and is never committed twice.
    with open(os.path.join(work_dir, "trials.jsonl"), "w", encoding="utf-8") as f:
        f.write("".join(json.dumps(t) + "\n" for t in trials))
    db = ms.database.JSONDatabase(work_dir=work_dir)
    workload_entry = db.commit_workload(mod)
    for rec in records:
        db.commit_tuning_record(
            ms.database.TuningRecord(
                rec.trace, workload_entry, rec.run_secs, rec.target, rec.args_info
            )
        )
