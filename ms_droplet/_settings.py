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
"""DropletStrategy's settings checked: a clear error naming the setting and what it accepts."""

from __future__ import annotations

from typing import Any

__all__ = ["EVOLUTIONARY_KEYS", "check_optional_int", "check_settings"]

#: The ``EvolutionarySearch`` settings the strategy passes on.
EVOLUTIONARY_KEYS = (
    "population_size",
    "init_measured_ratio",
    "init_min_unmeasured",
    "max_fail_count",
    "genetic_num_iters",
    "genetic_mutate_prob",
    "genetic_max_fail_count",
    "eps_greedy",
)


def check_settings(
    *,
    num_evolutionary_trials: Any,
    pvalue: Any,
    max_step: Any,
    max_control_failures: Any,
    stagnation_trials: Any,
    rank_min_records: Any,
    control_every: Any,
    max_challengers: Any,
    restart_trials: Any,
    final_trials: Any,
    explore_share: Any,
    explore_pool: Any,
    descent_batch: Any,
    small_budget_batch: Any,
    combine_best: Any,
    retile: Any,
    beam: Any,
    when_converged: Any,
    evolutionary: dict[str, Any] | None,
    flags: dict[str, Any] | None = None,
) -> None:
    """Raise TypeError or ValueError for the first setting of DropletStrategy out of range.

    ``flags`` maps the names of the on/off settings to their values; each must be a bool (a
    variant's JSON ``"false"`` or ``0`` would otherwise switch a setting silently).
    """
    for name, value in (flags or {}).items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if isinstance(num_evolutionary_trials, bool) or not isinstance(num_evolutionary_trials, int):
        raise TypeError(f"num_evolutionary_trials must be an int, got {num_evolutionary_trials!r}")
    if num_evolutionary_trials < 0:
        raise ValueError(
            f"num_evolutionary_trials must be >= 0, got {num_evolutionary_trials} "
            "(0 starts the descent from the best record already in the database)"
        )
    if isinstance(pvalue, bool) or not isinstance(pvalue, int | float):
        raise TypeError(f"pvalue must be a number, got {pvalue!r}")
    if not 0.0 < pvalue <= 1.0:
        raise ValueError(f"pvalue must satisfy 0 < pvalue <= 1, got {pvalue}")
    if isinstance(max_step, bool) or not isinstance(max_step, int) or max_step < 1:
        raise ValueError(f"max_step must be an int >= 1, got {max_step!r}")
    if not isinstance(max_control_failures, int) or max_control_failures < 1:
        raise ValueError(f"max_control_failures must be an int >= 1, got {max_control_failures!r}")
    check_optional_int("stagnation_trials", stagnation_trials, 1)
    check_optional_int("rank_min_records", rank_min_records, 1)
    check_optional_int("control_every", control_every, 2)
    check_optional_int("max_challengers", max_challengers, 1, optional=False)
    check_optional_int("restart_trials", restart_trials, 1)
    check_optional_int("final_trials", final_trials, 0, optional=False)
    check_optional_int("combine_best", combine_best, 0, optional=False)
    if combine_best == 1:
        raise ValueError(
            "combine_best must be 0 (no pairs) or >= 2 (a pair needs two moves), got 1"
        )
    check_optional_int("retile", retile, 0, optional=False)
    check_optional_int("beam", beam, 0, optional=False)
    if beam == 1:
        raise ValueError(
            "beam must be 0 (the start's neighbourhood only) or >= 2 (the start and the next "
            "fastest records), got 1"
        )
    if (
        isinstance(explore_share, bool)
        or not isinstance(explore_share, int | float)
        or not 0.0 <= explore_share < 1.0
    ):
        raise ValueError(f"explore_share must be a number in [0, 1), got {explore_share!r}")
    check_optional_int("explore_pool", explore_pool, 0, optional=False)
    check_optional_int("descent_batch", descent_batch, 4)
    check_optional_int("small_budget_batch", small_budget_batch, 4)
    if when_converged not in ("explore", "stop"):
        raise ValueError(f'when_converged must be "explore" or "stop", got {when_converged!r}')
    unknown = sorted(set(evolutionary or {}) - set(EVOLUTIONARY_KEYS))
    if unknown:
        raise TypeError(
            f"unknown EvolutionarySearch setting(s) {unknown}; valid: {list(EVOLUTIONARY_KEYS)}"
        )


def check_optional_int(name: str, value: Any, minimum: int, *, optional: bool = True) -> None:
    """Raise ValueError unless ``value`` is an int >= ``minimum`` (or None when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
