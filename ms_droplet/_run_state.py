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
"""The per-tuning state of a DropletStrategy task: created in pre_tuning, dropped in post_tuning."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tvm.s_tir.meta_schedule.cost_model import CostModel
    from tvm.s_tir.meta_schedule.database import Database, Workload
    from tvm.s_tir.meta_schedule.search_strategy import MeasureCandidate

    from ._candidates import CandidateCache
    from ._descent import Descent
    from ._proposals import Neighbour, Proposal
    from ._stats import SlotNoise

__all__ = ["Phase", "RunState", "WhenConverged"]

Phase = Literal["explore", "descent", "final", "done"]
WhenConverged = Literal["explore", "stop"]


@dataclass
class RunState:
    """Per-tuning state: created in pre_tuning, dropped in post_tuning."""

    max_trials: int
    num_trials_per_iter: int
    database: Database
    workload: Workload
    logger: logging.Logger
    cache: CandidateCache
    design_spaces: list
    cost_model: CostModel | None
    evo_running: bool = False
    evo_budget: int = 0  # trials of the current exploration slice
    evo_trials: int = 0  # trials measured in the current exploration slice
    adaptive: bool = True  # whether the current slice may end early on stagnation
    trials: int = 0
    descent: Descent | None = None
    pending: list[Proposal] | None = None
    phase: Phase = "explore"
    best_secs: float = math.inf  # best mean run seconds seen while exploring
    since_best: int = 0  # explored trials since the best improved
    descended: set[str] = field(default_factory=set)  # keys that were a descent's incumbent
    num_descents: int = 0
    explored_trials: int | None = None  # trials of this run measured before its first descent
    num_moves: int = 0
    own_seconds: float = 0.0  # the strategy's own time: neighbours, replay, ranking
    side_evo: bool = False  # an EvolutionarySearch fills part of every descent batch
    side_trials: int = 0  # its candidates measured in descent batches
    # its candidates in flight, by trace key
    offered: dict[str, MeasureCandidate] = field(default_factory=dict)
    small: bool | None = None  # small-budget descents (small_budget_batch); set at the first one
    reserve: int = 0  # trials kept for the final batch until it is proposed
    past_incumbents: list[Neighbour] = field(default_factory=list)  # of converged descents
    final: tuple[list[Neighbour], list[int]] | None = None  # final batch in flight
    pick: Neighbour | None = None  # the final batch's winner
    pick_secs: list[float] | None = None  # its run seconds in the final batch
    slot_noise: tuple[SlotNoise, ...] = ()  # of the task's earlier descent batches (pool_noise)
