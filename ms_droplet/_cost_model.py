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
"""The task's cost model as Python sees it: its warm-up state readable.

MetaSchedule hands ``SearchStrategy.pre_tuning`` the cost model as the C++ object: a Python
model (``XGBModel`` is one, made by TVM's ``derived_object``) comes back as a bare
``_PyCostModel`` whose Python attributes (``num_warmup_samples``, ``data_size``, ``booster``)
cannot be read. :func:`python_side` finds the Python object that wraps the same C++ object.
"""

from __future__ import annotations

import gc
from typing import Any

__all__ = ["model_warming", "python_side"]


def python_side(cost_model: Any) -> Any:
    """The Python object of ``cost_model`` (the same C++ object), or ``cost_model`` itself.

    A model whose Python attributes are readable already, a C++ model and None are returned as
    they are; so is a Python model whose object is no longer alive (none to find).
    """
    if cost_model is None or hasattr(cost_model, "num_warmup_samples"):
        return cost_model
    from tvm.s_tir.meta_schedule.cost_model import CostModel

    kind = type(cost_model)
    for obj in gc.get_objects():
        if (
            isinstance(obj, CostModel)
            and type(obj) is not kind
            and obj is not cost_model
            and obj.same_as(cost_model)
        ):
            return obj
    return cost_model


def model_warming(cost_model: Any) -> bool:
    """Whether ``cost_model`` still predicts random scores: TVM's ``XGBModel`` warm-up.

    True for a model with ``num_warmup_samples`` and ``data_size`` (ints) that holds fewer
    records than its warm-up needs; False for any other model (or none). Pass the model through
    :func:`python_side` first.
    """
    warmup = getattr(cost_model, "num_warmup_samples", None)
    size = getattr(cost_model, "data_size", None)
    return isinstance(warmup, int) and isinstance(size, int) and size < warmup
