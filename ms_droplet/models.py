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
"""Image classifiers written with ``tvm.relax.frontend.nn``, with random weights.

Every model function returns ``(mod, params)``:

* ``mod`` is a relax :class:`~tvm.ir.IRModule` whose function ``"main"`` takes the image
  first and then the weights (``num_input`` is 1), exactly as ``nn.Module.export_tvm`` makes it;
* ``params`` maps the names of the weight parameters of ``"main"`` to
  :class:`tvm.runtime.Tensor` values, ready for
  ``relax.transform.BindParams("main", params)``, for the ``params`` argument of
  ``tune_relax`` / ``extract_tasks`` / ``compile_relax`` (which bind them the same way), or for
  ``relax.build(mod, target, params={"main": list(params.values())})``-style use.

Nothing is downloaded: the weights are drawn with a seeded NumPy generator (He-normal
convolution and dense weights, small random biases). Batch normalisation is folded into the
convolution weights and biases, as in an inference deployment, so the graphs contain
``conv2d + add (+ add) + relu`` chains that ``FuseOps`` turns into one tuning task each.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.frontend import nn
from tvm.relax.frontend.nn import op
from tvm.runtime import Tensor

__all__ = [
    "MODELS",
    "get_model",
    "input_shape",
    "mobilenet_v2",
    "random_input",
    "resnet18",
    "small_cnn",
    "vgg11",
]

Model = tuple[IRModule, dict[str, Tensor]]


# ------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------


def _max_pool2d(x: nn.Tensor, size: int, stride: int, padding: int) -> nn.Tensor:
    expr = relax.op.nn.max_pool2d(
        x._expr, pool_size=size, strides=stride, padding=padding, layout="NCHW"
    )
    return nn.wrap_nested(expr, "max_pool2d")


def _global_avg_pool2d(x: nn.Tensor) -> nn.Tensor:
    expr = relax.op.nn.adaptive_avg_pool2d(x._expr, output_size=1, layout="NCHW")
    return nn.wrap_nested(expr, "global_avg_pool2d")


def _flatten(x: nn.Tensor) -> nn.Tensor:
    n = x.shape[0]
    features = math.prod(int(d) for d in x.shape[1:])
    return op.reshape(x, [n, features])


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2D:
    return nn.Conv2D(
        in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=True
    )


class _BasicBlock(nn.Module):
    """ResNet basic block (batch norm folded into the convolutions)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        self.conv1 = _conv(in_ch, out_ch, 3, stride)
        self.conv2 = _conv(out_ch, out_ch, 3)
        needs_projection = stride != 1 or in_ch != out_ch
        self.downsample = _conv(in_ch, out_ch, 1, stride) if needs_projection else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = op.relu(self.conv1(x))
        out = self.conv2(out)
        return op.relu(op.add(out, identity))


class _ResNet18(nn.Module):
    def __init__(self, num_classes: int) -> None:
        self.stem = _conv(3, 64, 7, stride=2)
        blocks = []
        in_ch = 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(_BasicBlock(in_ch, out_ch, stride))
            blocks.append(_BasicBlock(out_ch, out_ch, 1))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = op.relu(self.stem(x))
        x = _max_pool2d(x, 3, 2, 1)
        for block in self.blocks:
            x = block(x)
        return self.fc(_flatten(_global_avg_pool2d(x)))


_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class _VGG11(nn.Module):
    def __init__(self, num_classes: int, image_size: int) -> None:
        convs = []
        in_ch = 3
        for item in _VGG11_CFG:
            if item != "M":
                convs.append(_conv(in_ch, int(item), 3))
                in_ch = int(item)
        self.convs = nn.ModuleList(convs)
        side = image_size // 32
        self.fc1 = nn.Linear(512 * side * side, 4096)
        self.fc2 = nn.Linear(4096, 4096)
        self.fc3 = nn.Linear(4096, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        convs = iter(self.convs)
        for item in _VGG11_CFG:
            x = _max_pool2d(x, 2, 2, 0) if item == "M" else op.relu(next(convs)(x))
        x = _flatten(x)
        x = op.relu(self.fc1(x))
        x = op.relu(self.fc2(x))
        return self.fc3(x)


class _InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project (linear bottleneck)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        hidden = in_ch * expand
        self.expand = _conv(in_ch, hidden, 1) if expand != 1 else None
        self.depthwise = _conv(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv(hidden, out_ch, 1)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        out = x if self.expand is None else op.relu6(self.expand(x))
        out = op.relu6(self.depthwise(out))
        out = self.project(out)
        return op.add(out, x) if self.residual else out


_MOBILENET_V2_CFG = (  # expansion, channels, repeats, first stride
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _MobileNetV2(nn.Module):
    def __init__(self, num_classes: int) -> None:
        self.stem = _conv(3, 32, 3, stride=2)
        blocks = []
        in_ch = 32
        for expand, out_ch, repeats, stride in _MOBILENET_V2_CFG:
            for i in range(repeats):
                blocks.append(_InvertedResidual(in_ch, out_ch, stride if i == 0 else 1, expand))
                in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.head = _conv(in_ch, 1280, 1)
        self.fc = nn.Linear(1280, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = op.relu6(self.stem(x))
        for block in self.blocks:
            x = block(x)
        x = op.relu6(self.head(x))
        return self.fc(_flatten(_global_avg_pool2d(x)))


class _SmallCNN(nn.Module):
    def __init__(self, num_classes: int, image_size: int) -> None:
        self.conv1 = _conv(3, 16, 3)
        self.conv2 = _conv(16, 32, 3, stride=2)
        side = (image_size + 1) // 2
        self.fc = nn.Linear(32 * side * side, num_classes)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        x = op.relu(self.conv1(x))
        x = op.relu(self.conv2(x))
        return self.fc(_flatten(x))


# ------------------------------------------------------------------------------------------
# Export and random weights
# ------------------------------------------------------------------------------------------


#: Weights that end a residual branch (ResNet, MobileNetV2): drawn smaller so that the
#: activations do not grow block after block.
_RESIDUAL_BRANCH_ENDS = ("conv2.weight", "project.weight")


def _random_weight(
    rng: np.random.Generator, name: str, shape: tuple[int, ...], dtype: str, head: bool
) -> np.ndarray:
    """He-normal weights (unit-scale activations), small biases, a damped classifier head."""
    if name.endswith("bias"):
        return (0.01 * rng.standard_normal(shape)).astype(dtype)
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
    std = math.sqrt(2.0 / fan_in)
    if name.endswith(_RESIDUAL_BRANCH_ENDS):
        std *= 0.5
    if head:
        std *= 0.25  # logits of order 1, so that float32 rounding stays far below 1e-4
    return (std * rng.standard_normal(shape, dtype=np.float32)).astype(dtype)


def _export(model: nn.Module, batch_size: int, image_size: int, dtype: str, seed: int) -> Model:
    """Export ``model.forward`` as relax function ``"main"`` and draw its weights."""
    spec = {"forward": {"x": nn.spec.Tensor([batch_size, 3, image_size, image_size], dtype)}}
    exported, named_params = model.export_tvm(spec)
    func = exported["forward"].with_attr("global_symbol", "main")
    mod = IRModule({"main": func})
    num_input = int(func.attrs["num_input"])
    weight_vars = list(func.params)[num_input:]
    if len(weight_vars) != len(named_params):
        raise RuntimeError(
            f"export_tvm gave {len(named_params)} parameters for {len(weight_vars)} weight inputs"
        )
    rng = np.random.default_rng(seed)
    head = max(i for i, (_, p) in enumerate(named_params) if len(p.shape) == 2)
    params: dict[str, Tensor] = {}
    for i, (var, (name, param)) in enumerate(zip(weight_vars, named_params, strict=True)):
        shape = tuple(int(d) for d in param.shape)
        value = _random_weight(rng, name, shape, str(param.dtype), head=i == head)
        params[var.name] = tvm.runtime.tensor(value)
    return mod, params


def small_cnn(
    batch_size: int = 1,
    image_size: int = 32,
    num_classes: int = 10,
    dtype: str = "float32",
    seed: int = 0,
) -> Model:
    """A two-convolution CNN small enough to tune in CI.

    ``conv3x3(3->16) + relu``, ``conv3x3/2(16->32) + relu``, flatten, dense.

    Parameters
    ----------
    batch_size, image_size, num_classes, dtype
        Input ``[batch_size, 3, image_size, image_size]`` of ``dtype``; output
        ``[batch_size, num_classes]``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    mod : IRModule
        Relax module with ``main(x, *weights)``.
    params : dict[str, tvm.runtime.Tensor]
        The weights, by parameter name of ``main``.
    """
    return _export(_SmallCNN(num_classes, image_size), batch_size, image_size, dtype, seed)


def resnet18(
    batch_size: int = 1,
    image_size: int = 224,
    num_classes: int = 1000,
    dtype: str = "float32",
    seed: int = 0,
) -> Model:
    """ResNet-18 (He et al., 2016) for inference, batch norm folded into the convolutions.

    Parameters
    ----------
    batch_size, image_size, num_classes, dtype
        Input ``[batch_size, 3, image_size, image_size]``; output ``[batch_size, num_classes]``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    mod : IRModule
        Relax module with ``main(x, *weights)``.
    params : dict[str, tvm.runtime.Tensor]
        The weights, by parameter name of ``main``.
    """
    return _export(_ResNet18(num_classes), batch_size, image_size, dtype, seed)


def vgg11(
    batch_size: int = 1,
    image_size: int = 224,
    num_classes: int = 1000,
    dtype: str = "float32",
    seed: int = 0,
) -> Model:
    """VGG-11 (configuration "A" of Simonyan and Zisserman, 2015), without batch norm.

    Note that its classifier holds about 123 M weights (about 500 MB of float32).

    Parameters
    ----------
    batch_size, image_size, num_classes, dtype
        Input ``[batch_size, 3, image_size, image_size]`` (``image_size`` a multiple of 32);
        output ``[batch_size, num_classes]``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    mod : IRModule
        Relax module with ``main(x, *weights)``.
    params : dict[str, tvm.runtime.Tensor]
        The weights, by parameter name of ``main``.
    """
    if image_size % 32:
        raise ValueError(f"vgg11 needs an image_size that is a multiple of 32, got {image_size}")
    return _export(_VGG11(num_classes, image_size), batch_size, image_size, dtype, seed)


def mobilenet_v2(
    batch_size: int = 1,
    image_size: int = 224,
    num_classes: int = 1000,
    dtype: str = "float32",
    seed: int = 0,
) -> Model:
    """MobileNetV2 (Sandler et al., 2018), width 1.0, batch norm folded into the convolutions.

    Parameters
    ----------
    batch_size, image_size, num_classes, dtype
        Input ``[batch_size, 3, image_size, image_size]``; output ``[batch_size, num_classes]``.
    seed : int
        Seed of the random weights.

    Returns
    -------
    mod : IRModule
        Relax module with ``main(x, *weights)``.
    params : dict[str, tvm.runtime.Tensor]
        The weights, by parameter name of ``main``.
    """
    return _export(_MobileNetV2(num_classes), batch_size, image_size, dtype, seed)


#: Model functions by the names the example and the tests use.
MODELS: dict[str, Callable[..., Model]] = {
    "small": small_cnn,
    "resnet18": resnet18,
    "vgg11": vgg11,
    "mobilenet_v2": mobilenet_v2,
}


def get_model(name: str, **kwargs: int | str) -> Model:
    """Build one of :data:`MODELS` by name.

    Parameters
    ----------
    name : str
        ``"small"``, ``"resnet18"``, ``"vgg11"`` or ``"mobilenet_v2"``.
    **kwargs
        Passed to the model function (``batch_size``, ``image_size``, ``seed``, ...).

    Returns
    -------
    mod : IRModule
        Relax module with ``main(x, *weights)``.
    params : dict[str, tvm.runtime.Tensor]
        The weights, by parameter name of ``main``.
    """
    try:
        fn = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return fn(**kwargs)


def input_shape(mod: IRModule) -> tuple[tuple[int, ...], str]:
    """Shape and dtype of the first input of ``mod["main"]``."""
    ty = mod["main"].params[0].ty
    return tuple(int(d) for d in ty.shape), str(ty.dtype)


def random_input(mod: IRModule, seed: int = 0) -> np.ndarray:
    """A random image for ``mod["main"]`` (standard normal, seeded)."""
    shape, dtype = input_shape(mod)
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)
