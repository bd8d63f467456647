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
"""Tiny ONNX models built in code with onnx.helper (never downloaded)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: onnxruntime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 by default.
IR_VERSION = 8
OPSET = 17


def _init(rng: np.random.Generator, name: str, shape: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def tiny_cnn(
    *,
    input_dims: Sequence[int | str] = (1, 3, 16, 16),
    activation: str = "Relu",
    seed: int = 0,
) -> onnx.ModelProto:
    """Conv(3->8, 3x3, pad 1) + bias, an activation, MaxPool 2x2, GlobalAveragePool, Flatten,
    Gemm(8->10). ``input_dims`` may hold names (dynamic dimensions); ``activation`` any
    one-input ONNX operator (``"Celu"`` is one TVM's frontend does not import)."""
    rng = np.random.default_rng(seed)
    batch = input_dims[0]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(activation, ["c1"], ["a1"]),
        helper.make_node("MaxPool", ["a1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 10])],
        [
            _init(rng, "w1", (8, 3, 3, 3)),
            _init(rng, "b1", (8,)),
            _init(rng, "w2", (10, 8)),
            _init(rng, "b2", (10,)),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)
