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
"""What the descent exchanges with its caller: neighbours, batch proposals, decisions (no TVM)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

__all__ = ["DescentEvent", "EventKind", "Neighbour", "Proposal", "Role"]

P = TypeVar("P")

#: What a proposal is for: the incumbent as a control, a challenger's re-measurement, a new point.
Role = Literal["control", "confirm", "explore"]
#: What the descent decided.
EventKind = Literal[
    "challenger",
    "inconclusive",
    "move",
    "reject",
    "widen",
    "converged",
    "control-failed",
    "scouted",
    "carried",
]


@dataclass(frozen=True)
class Neighbour(Generic[P]):
    """A candidate point next to the incumbent.

    Attributes
    ----------
    coordinate : str
        Which coordinate was changed and how (for logs).
    point : P
        The candidate itself.
    key : Hashable
        Its fingerprint: two neighbours with the same key are the same candidate.
    jump : bool
        Listed in a point's neighbourhood without being one coordinate from it (e.g. a
        neighbour of another record, with ``beam``): a move to it is a jump (no move is
        carried after it), and pairs of moves (``combine``) leave it out.
    """

    coordinate: str
    point: Any
    key: Hashable
    jump: bool = False


@dataclass(frozen=True)
class Proposal:
    """One entry of a batch.

    Attributes
    ----------
    role : Role
        ``"control"`` (the incumbent), ``"confirm"`` (a challenger re-measured) or
        ``"explore"`` (a point never measured).
    neighbour : Neighbour
        The point.
    speculative : bool
        An explore of a pending challenger's neighbourhood rather than the incumbent's.
    """

    role: Role
    neighbour: Neighbour
    speculative: bool = False


@dataclass(frozen=True)
class DescentEvent:
    """Something the descent decided, reported through ``on_event`` for logging."""

    kind: EventKind
    step: int
    coordinate: str = ""
    ratio: float | None = None
    pvalue: float | None = None
    message: str = ""
