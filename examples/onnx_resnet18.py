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
"""Write torchvision's ResNet-18 (random weights) as an ONNX file, built with onnx.helper.

The graph is what ``torch.onnx.export(torchvision.models.resnet18().eval(), ...)`` writes at
opset 17: batch norms folded into the convolutions (so every Conv has a bias), Relu, MaxPool,
Add, GlobalAveragePool, Flatten, Gemm; input ``input`` of shape 1x3x224x224 (``--batch N``
makes the batch dimension named, as with ``dynamic_axes``), output ``output`` 1x1000. No torch
needed. Then tune it::

    python examples/onnx_resnet18.py resnet18.onnx
    ms-droplet tune-model resnet18.onnx --trials 2000 --out tuned_resnet18
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # onnxruntime 1.31 reads IR versions up to 13; onnx 1.23 writes 14 by default


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.weights: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def _weight(self, name: str, value: np.ndarray) -> str:
        self.weights.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, *, scale: float = 1.0) -> str:
        """Conv with a folded batch norm: kaiming-normal weights (fan_out, as torchvision),
        times ``scale``, and a small bias."""
        name = self._name("conv")
        std = np.sqrt(2.0 / (cout * k * k)) * scale
        w = self._weight(f"{name}.weight", self.rng.normal(0.0, std, (cout, cin, k, k)))
        b = self._weight(f"{name}.bias", self.rng.normal(0.0, 0.01, (cout,)))
        out = f"{name}.out"
        pad = k // 2
        self.nodes.append(
            helper.make_node(
                "Conv",
                [x, w, b],
                [out],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
        )
        return out

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        out = f"{self._name(kind.lower())}.out"
        self.nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def basic_block(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.op("Relu", [self.conv(x, cin, cout, 3, stride)])
        # a small last conv keeps the activations of random weights in range through 8 blocks
        y = self.conv(y, cout, cout, 3, 1, scale=0.3)
        shortcut = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride)
        return self.op("Relu", [self.op("Add", [y, shortcut])])


def resnet18(*, batch: int | str = 1, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 (torchvision's layers, batch norms folded) with random weights."""
    b = _Builder(seed)
    x = b.op("Relu", [b.conv("input", 3, 64, 7, 2)])
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = b.basic_block(x, cin, cout, stride)
        x = b.basic_block(x, cout, cout, 1)
        cin = cout
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x])], axis=1)
    fc_w = b._weight("fc.weight", b.rng.normal(0.0, 0.01, (1000, 512)))
    fc_b = b._weight("fc.bias", np.zeros(1000))
    b.nodes.append(helper.make_node("Gemm", [x, fc_w, fc_b], ["output"], transB=1))
    graph = helper.make_graph(
        b.nodes,
        "resnet18",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 1000])],
        b.weights,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    onnx.checker.check_model(model)
    return model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", default="resnet18.onnx", help="the .onnx file to write")
    p.add_argument("--seed", type=int, default=0, help="weights seed")
    p.add_argument(
        "--batch",
        default="1",
        help="batch size, or a name for a dynamic batch dimension (then tune with "
        "--input-shape input:1x3x224x224)",
    )
    args = p.parse_args(argv)
    batch: int | str = int(args.batch) if args.batch.isdigit() else args.batch
    model = resnet18(batch=batch, seed=args.seed)
    onnx.save(model, args.path)
    convs = sum(n.op_type == "Conv" for n in model.graph.node)
    params = sum(int(np.prod(w.dims)) for w in model.graph.initializer)
    print(f"wrote {args.path}: {len(model.graph.node)} nodes ({convs} Conv), {params:,} weights")
    print(f"tune it with: ms-droplet tune-model {args.path} --trials 2000 --out tuned_resnet18")
    return 0


if __name__ == "__main__":
    sys.exit(main())
