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
"""Named workload suites of ``ms-droplet bench``."""

from __future__ import annotations

from dataclasses import dataclass

from tvm.s_tir.meta_schedule.testing import te_workload

__all__ = ["SUITES", "Suite"]


@dataclass(frozen=True)
class Suite:
    """A list of workloads and the budget they are meant to be run with.

    Attributes
    ----------
    name : str
        The ``--suite`` name.
    workloads : tuple[str, ...]
        Workload specs (see :func:`ms_droplet._workloads.load_workload`).
    trials : int
        Droplet's total budget per workload (``--trials`` default for this suite).
    num_evolutionary_trials : int
        Droplet's exploration trials (``--num-evolutionary-trials`` default).
    ratio : int
        K: the evolutionary search's budget is K times droplet's (``--ratio`` default).
    about : str
        One line for ``--help``.
    """

    name: str
    workloads: tuple[str, ...]
    trials: int
    num_evolutionary_trials: int
    ratio: int
    about: str


# The Ansor single-operator suite, every shape of the 13 operators of the Ansor paper.
_ANSOR_OPS = ("C1D", "C2D", "C3D", "GMM", "GRP", "DIL", "DEP", "T2D", "CAP", "NRM", "SFM", "CBR")
_ANSOR_OPS += ("TBG",)

# ResNet-18 (batch 1, 224x224, NHWC) layers not already in the Ansor C2D shapes, and its dense.
_RESNET18 = (
    "conv2d:1,56,56,64,64,3,1,1",
    "conv2d:1,56,56,64,128,3,2,1",
    "conv2d:1,56,56,64,128,1,2,0",
    "conv2d:1,28,28,128,128,3,1,1",
    "conv2d:1,28,28,128,256,3,2,1",
    "conv2d:1,28,28,128,256,1,2,0",
    "conv2d:1,14,14,256,512,3,2,1",
    "conv2d:1,14,14,256,512,1,2,0",
    "matmul:1,1000,512",
)
# VGG-11 layers (the first conv differs from ResNet's stem) and its three dense layers.
_VGG11 = (
    "conv2d:1,224,224,3,64,3,1,1",
    "conv2d:1,112,112,64,128,3,1,1",
    "conv2d:1,56,56,128,256,3,1,1",
    "conv2d:1,56,56,256,256,3,1,1",
    "conv2d:1,28,28,256,512,3,1,1",
    "conv2d:1,28,28,512,512,3,1,1",
    "conv2d:1,14,14,512,512,3,1,1",
    "matmul:1,4096,25088",
    "matmul:1,4096,4096",
    "matmul:1,1000,4096",
)


def _ansor() -> tuple[str, ...]:
    return tuple(f"{op}:{i}" for op in _ANSOR_OPS for i in range(len(te_workload.CONFIGS[op][1])))


SUITES: dict[str, Suite] = {
    "quick": Suite(
        name="quick",
        workloads=("matmul:512,512,512", "C1D:0", "DEP:1", "C2D:1"),
        trials=64,
        num_evolutionary_trials=32,
        ratio=5,
        about="4 small workloads, budget 64 (evolutionary 320): about 40 minutes on 2 cores",
    ),
    "small": Suite(
        name="small",
        workloads=(
            "matmul:512,512,512",
            "C1D:0",
            "C2D:1",
            "DEP:1",
            "conv2d:1,28,28,128,128,3,1,1",
            "conv2d:1,14,14,256,512,3,2,1",
        ),
        trials=64,
        num_evolutionary_trials=32,
        ratio=4,
        about="the small-budget regime: 4 Ansor ops and 2 ResNet-18 layers, budget 64, "
        "evolutionary 256 (use --seeds 0 1 2): 6-9 minutes per workload and seed on 2 cores",
    ),
    "plateau": Suite(
        name="plateau",
        workloads=(
            "matmul:512,512,512",
            "C2D:1",
            "DEP:1",
            "conv2d:1,28,28,128,128,3,1,1",
        ),
        trials=300,
        num_evolutionary_trials=200,
        ratio=4,
        about="the plateau regime: 3 Ansor ops and a ResNet-18 layer, budget 300 with at most 200 "
        "explored (the descent starts earlier when exploration stagnates), evolutionary 1200 "
        "(use --seeds 0 1): about 30 minutes per workload and seed on 2 cores",
    ),
    "paper-cpu": Suite(
        name="paper-cpu",
        workloads=(*_ansor(), *_RESNET18, *_VGG11),
        trials=600,
        num_evolutionary_trials=300,
        ratio=5,
        about="the Ansor single-op suite (52 shapes) plus ResNet-18 and VGG-11 layers, budget "
        "600 with 300 explored (as published), evolutionary 3000 (the paper's 10,000: --ratio "
        "17): days on 2 cores; resume it, or pick --workload",
    ),
}
