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
"""ONNX models: loading, input shapes, import into relax, and onnxruntime as the reference.

Everything here fails with :class:`OnnxModelError`, whose message names the problem and the fix
(what ``ms-droplet tune-model`` prints with exit code 2): a file that is not ONNX, an operator
TVM's frontend does not import, a dynamic input dimension without a shape for it, a shape that
does not fit the model's input. ``onnx`` and ``onnxruntime`` are imported lazily, so that the
rest of the package works without them (``pip install 'ms_droplet[onnx]'``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "InputSpec",
    "OnnxModelError",
    "OutputComparison",
    "compare_outputs",
    "import_model",
    "load_model",
    "model_inputs",
    "model_sha256",
    "onnxruntime_session",
    "onnxruntime_timer",
    "parse_input_shape",
    "random_inputs",
    "run_onnxruntime",
]

logger = logging.getLogger("ms_droplet.onnx")

_INSTALL_HINT = "install it with: pip install 'ms_droplet[onnx]'"


class OnnxModelError(ValueError):
    """A model (or its input shapes) that cannot be tuned as given; the message says why."""


@dataclass(frozen=True)
class InputSpec:
    """One graph input of a model, with the static shape it is imported and run with.

    Attributes
    ----------
    name : str
        The ONNX input name.
    shape : tuple[int, ...]
        The static shape.
    dtype : str
        The numpy element type (``"float32"``, ``"int64"``, ...).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class OutputComparison:
    """How one output of a TVM build compares with onnxruntime's.

    ``passed`` is ``numpy.allclose(actual, expected, rtol, atol)``: every element satisfies
    ``|actual - expected| <= atol + rtol * |expected|`` (and shapes agree).
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    rtol: float
    atol: float
    passed: bool


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError(f"tuning an ONNX model needs the onnx package; {_INSTALL_HINT}") from None
    return onnx


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ImportError(
            f"checking and timing against onnxruntime needs the onnxruntime package; "
            f"{_INSTALL_HINT}"
        ) from None
    return onnxruntime


# ------------------------------------------------------------------------------------------
# Loading and inputs
# ------------------------------------------------------------------------------------------


def load_model(path: str | os.PathLike) -> Any:
    """Read an ONNX model file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.onnx`` file (weights in external data files next to it are loaded too).

    Returns
    -------
    model : onnx.ModelProto
        The model.

    Raises
    ------
    OnnxModelError
        The file is missing, unreadable, or not an ONNX model.
    """
    onnx = _import_onnx()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise OnnxModelError(f"no ONNX model at {path!r}: the file does not exist")
    try:
        model = onnx.load(path)
    except Exception as err:  # protobuf raises DecodeError, onnx raises several kinds
        raise OnnxModelError(
            f"{path!r} is not an ONNX model (onnx.load failed: {_first_line(err)}); give the "
            "path of a .onnx file, e.g. one written by torch.onnx.export or onnx.save"
        ) from None
    if not model.graph.node or not model.graph.output:
        raise OnnxModelError(
            f"{path!r} is not an ONNX model: it holds no graph (no nodes or no outputs); give the "
            "path of a .onnx file, e.g. one written by torch.onnx.export or onnx.save"
        )
    return model


def model_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a model file (what a resumed tuning checks it is given the same model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_input_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """Parse ``NAME:1x3x224x224`` (or ``1x3x224x224`` for a model with one input).

    Returns
    -------
    name, shape : tuple[Optional[str], tuple[int, ...]]
        The input name (None when not given) and the shape.

    Raises
    ------
    ValueError
        The text is not of that form or a dimension is not a positive whole number.
    """
    name, sep, dims = text.rpartition(":")
    if not sep:
        name, dims = "", text
    parts = dims.split("x") if dims else []
    if not parts or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"expected NAME:DxDx... with positive whole dimensions, e.g. x:1x3x224x224, "
            f"got {text!r}"
        )
    return (name or None), tuple(int(p) for p in parts)


def _dims(value_info: Any) -> list[int | str] | None:
    """The dimensions of a tensor input: ints, names of symbolic dims, "?" for unknown ones;
    None when the rank is unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    out: list[int | str] = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            out.append(int(d.dim_value))
        else:
            out.append(d.dim_param or "?")
    return out


def _fmt_dims(dims: Sequence[int | str] | None) -> str:
    return "unknown rank" if dims is None else "[" + ", ".join(str(d) for d in dims) + "]"


def _fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def model_inputs(
    model: Any, input_shapes: Mapping[str | None, Sequence[int]] | None = None
) -> list[InputSpec]:
    """The graph inputs of ``model`` (initializers excluded) with static shapes.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    input_shapes : Optional[Mapping[str, Sequence[int]]]
        Shapes for inputs with dynamic dimensions (or to confirm static ones), by input name;
        the key None stands for the only input of a one-input model.

    Returns
    -------
    inputs : list[InputSpec]
        One entry per graph input, in graph order.

    Raises
    ------
    OnnxModelError
        A shape names no input of the model, does not fit the input's rank or fixed
        dimensions, or an input has a dynamic dimension and no shape was given for it.
    """
    onnx = _import_onnx()
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    names = [vi.name for vi in graph_inputs]
    shapes = dict(input_shapes or {})
    if None in shapes:
        if len(names) != 1:
            raise OnnxModelError(
                f"an input shape without a name fits only a model with one input; this one has "
                f"{len(names)} ({', '.join(names)}): give NAME:SHAPE for each"
            )
        shapes[names[0]] = shapes.pop(None)
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise OnnxModelError(
            f"--input-shape names no input of the model: {', '.join(map(str, unknown))}; its "
            f"inputs are {', '.join(names) or '(none)'}"
        )
    specs = []
    for vi in graph_inputs:
        if not vi.type.HasField("tensor_type"):
            raise OnnxModelError(
                f"input {vi.name!r} is not a tensor (sequence, map or optional inputs are not "
                "supported by TVM's ONNX frontend)"
            )
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)))
        dims = _dims(vi)
        given = shapes.get(vi.name)
        if given is not None:
            given = tuple(int(d) for d in given)
            if dims is not None and (
                len(given) != len(dims)
                or any(isinstance(d, int) and d != g for d, g in zip(dims, given, strict=True))
            ):
                raise OnnxModelError(
                    f"input shape {vi.name}:{_fmt_shape(given)} does not match the model's input "
                    f"{vi.name!r} of shape {_fmt_dims(dims)}: keep its rank and its fixed "
                    "dimensions, choose only the named or unknown ones"
                )
            specs.append(InputSpec(vi.name, given, dtype))
            continue
        if dims is None or not all(isinstance(d, int) for d in dims):
            example = (
                "1x3x224x224"
                if dims is None
                else _fmt_shape([d if isinstance(d, int) else 1 for d in dims])
            )
            raise OnnxModelError(
                f"input {vi.name!r} has a dynamic shape {_fmt_dims(dims)}; MetaSchedule tunes "
                f"static shapes: give one with --input-shape {vi.name}:{example} "
                f"(input_shapes={{{vi.name!r}: ...}} in Python)"
            )
        specs.append(InputSpec(vi.name, tuple(int(d) for d in dims), dtype))
    if not specs:
        raise OnnxModelError("the model has no graph input (every input is an initializer)")
    return specs


# ------------------------------------------------------------------------------------------
# Import into relax
# ------------------------------------------------------------------------------------------


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _unsupported_ops(model: Any, message: str) -> list[str]:
    """The operator types of ``model`` named in the frontend's OpNotImplemented message."""
    tail = message.strip().splitlines()[0] if message.strip() else ""
    listed = {part.strip() for part in tail.rpartition(":")[2].split(",")}
    ops = sorted({node.op_type for node in model.graph.node} & listed)
    return ops


def import_model(model: Any, inputs: Sequence[InputSpec]) -> Any:
    """Import ``model`` into a relax IRModule with TVM's ONNX frontend, at static shapes.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    inputs : Sequence[InputSpec]
        Its inputs, from :func:`model_inputs`.

    Returns
    -------
    mod : IRModule
        ``main`` takes the inputs in graph order; the weights are bound as constants.

    Raises
    ------
    OnnxModelError
        The frontend does not support an operator of the model (named), or fails on it.
    """
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    shape_dict = {spec.name: list(spec.shape) for spec in inputs}
    dtype_dict = {spec.name: spec.dtype for spec in inputs}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
        except tvm.error.OpNotImplemented as err:
            ops = _unsupported_ops(model, str(err))
            named = ", ".join(ops) if ops else _first_line(err)
            raise OnnxModelError(
                f"TVM {tvm.__version__}'s ONNX frontend does not support the operator(s) "
                f"{named} used by this model; replace them before exporting (or export with "
                "another opset), or implement them in tvm.relax.frontend.onnx"
            ) from None
        except Exception as err:  # the frontend raises many kinds while converting nodes
            shapes = ", ".join(f"{s.name}:{_fmt_shape(s.shape)}" for s in inputs)
            raise OnnxModelError(
                f"TVM {tvm.__version__}'s ONNX frontend could not import the model with input "
                f"shapes {shapes}: {type(err).__name__}: {_first_line(err)}; if a shape was given "
                "with --input-shape, check that the model accepts it"
            ) from None
    for w in caught:
        logger.info("ONNX frontend: %s", _first_line(w.message))  # type: ignore[arg-type]
    return mod


def random_inputs(inputs: Sequence[InputSpec], seed: int) -> dict[str, np.ndarray]:
    """Random inputs: floats from a standard normal, integers in [0, 8), booleans at random.

    Parameters
    ----------
    inputs : Sequence[InputSpec]
        The model's inputs.
    seed : int
        The seed of numpy's ``default_rng``.

    Returns
    -------
    arrays : dict[str, numpy.ndarray]
        One array per input, by name, in graph order.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for spec in inputs:
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            arr = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype.kind in "iu":
            arr = rng.integers(0, 8, size=spec.shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.random(spec.shape) < 0.5
        else:
            raise OnnxModelError(
                f"input {spec.name!r} has element type {spec.dtype}, for which no random input "
                "is drawn (floats, integers and booleans are)"
            )
        out[spec.name] = arr
    return out


# ------------------------------------------------------------------------------------------
# onnxruntime: reference outputs and timing
# ------------------------------------------------------------------------------------------


def onnxruntime_session(model: Any, *, num_threads: int) -> Any:
    """An onnxruntime CPU session of ``model`` with ``num_threads`` intra-op threads.

    Parameters
    ----------
    model : onnx.ModelProto
        The model.
    num_threads : int
        Intra-op threads (the target's ``num-cores``); one inter-op thread, sequential
        execution, all graph optimizations (onnxruntime's defaults otherwise).

    Returns
    -------
    session : onnxruntime.InferenceSession
        The session.

    Raises
    ------
    OnnxModelError
        onnxruntime cannot load the model.
    """
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph/... kinds
        raise OnnxModelError(
            f"onnxruntime {ort.__version__} cannot load the model, so there is no reference to "
            f"check the tuned build against: {_first_line(err)}"
        ) from None


def run_onnxruntime(session: Any, arrays: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs of ``session`` on ``arrays``, in graph order."""
    return [np.asarray(x) for x in session.run(None, dict(arrays))]


def onnxruntime_timer(
    session: Any,
    arrays: Mapping[str, np.ndarray],
    *,
    number: int = 1,
    repeat: int = 3,
    min_repeat_ms: int = 100,
) -> Callable[[], list[float]]:
    """A timer of ``session`` with ``time_evaluator``'s semantics.

    Inputs and outputs are bound once (``io_binding``, outputs on the CPU), so a sample is the
    inference alone, as for a TVM VM's ``time_evaluator``. Each sample is the mean of ``number``
    runs, ``number`` doubled until a sample takes at least ``min_repeat_ms``; ``repeat`` samples
    per call.
    """
    ort = _import_onnxruntime()
    binding = session.io_binding()
    for name, arr in arrays.items():
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(arr))
    for out in session.get_outputs():
        binding.bind_output(out.name, "cpu")
    session.run_with_iobinding(binding)  # warm-up: threads, allocations
    state = {"count": max(int(number), 1)}

    def timer() -> list[float]:
        samples = []
        for _ in range(repeat):
            while True:
                count = state["count"]
                start = time.perf_counter()
                for _ in range(count):
                    session.run_with_iobinding(binding)
                elapsed = time.perf_counter() - start
                if elapsed * 1e3 >= min_repeat_ms or count >= 1 << 20:
                    break
                state["count"] = count * 2
            samples.append(elapsed / count)
        return samples

    return timer


def compare_outputs(
    actual: Sequence[np.ndarray],
    expected: Sequence[np.ndarray],
    names: Sequence[str],
    *,
    rtol: float,
    atol: float,
) -> list[OutputComparison]:
    """Compare the outputs of a TVM build with onnxruntime's, output by output."""
    if len(actual) != len(expected):
        raise OnnxModelError(
            f"the TVM build returns {len(actual)} output(s), onnxruntime {len(expected)}"
        )
    out = []
    for name, a, e in zip(names, actual, expected, strict=True):
        a = np.asarray(a)
        e = np.asarray(e)
        if a.shape != e.shape:
            out.append(
                OutputComparison(name, a.shape, float("inf"), float("inf"), rtol, atol, False)
            )
            continue
        if a.size == 0:
            out.append(OutputComparison(name, a.shape, 0.0, 0.0, rtol, atol, True))
            continue
        a64, e64 = a.astype(np.float64), e.astype(np.float64)
        diff = np.abs(a64 - e64)
        rel = diff / np.maximum(np.abs(e64), np.finfo(np.float64).tiny)
        passed = bool(np.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True))
        out.append(
            OutputComparison(
                name,
                tuple(a.shape),
                float(np.nanmax(diff)),
                float(np.nanmax(rel)),
                rtol,
                atol,
                passed,
            )
        )
    return out
