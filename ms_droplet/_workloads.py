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
"""Workloads by name: Ansor's single-operator suite, matmuls, or a TVMScript file."""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import tvm
from tvm import te
from tvm.s_tir.meta_schedule.testing import te_workload

__all__ = ["CONV2D", "MATMUL", "available_workloads", "load_workload", "parse_matmul"]

#: ``matmul:M,N,K`` (float32, ``(M, K) @ (K, N)``).
MATMUL = re.compile(r"^matmul:(\d+),(\d+),(\d+)$")
#: ``conv2d:N,H,W,CI,CO,KERNEL,STRIDE,PAD`` (float32 NHWC).
CONV2D = re.compile(r"^conv2d:(\d+(?:,\d+){7})$")


def parse_matmul(spec: str) -> tuple[int, int, int] | None:
    """``(M, N, K)`` of a ``matmul:M,N,K`` spec, or None for any other spec."""
    m = MATMUL.match(spec.strip())
    return None if m is None else (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def available_workloads() -> list[str]:
    """Every ``NAME:INDEX`` of the Ansor suite, e.g. ``C2D:0``."""
    return [
        f"{name}:{i}"
        for name, (_, params) in te_workload.CONFIGS.items()
        for i in range(len(params))
    ]


def load_workload(spec: str) -> tvm.IRModule:
    """Build the IRModule of a workload.

    Parameters
    ----------
    spec : str
        ``NAME:INDEX`` from ``tvm.s_tir.meta_schedule.testing.te_workload.CONFIGS``
        (``C2D:0``, ``DEP:1``, ...), ``matmul:M,N,K`` (float32, ``(M, K) @ (K, N)``),
        ``conv2d:N,H,W,CI,CO,KERNEL,STRIDE,PAD`` (float32 NHWC, e.g. a ResNet layer), or
        a path to a TVMScript file (``.py``) that defines an ``IRModule`` or ``PrimFunc``
        named ``Module`` or ``main``.

    Raises
    ------
    ValueError
        For an unknown name, an index out of range or a malformed spec, with the valid forms;
        for a TVMScript file that does not run (Python syntax error, TVMScript error, any
        exception), with the file, line and message.
    FileNotFoundError
        For a TVMScript path that does not exist.
    """
    spec = spec.strip()
    sizes = parse_matmul(spec)
    if sizes is not None:
        M, N, K = sizes
        if min(M, N, K) < 1:
            raise ValueError(f"matmul sizes must be >= 1, got {spec!r}")
        return _as_module(te.create_prim_func(te_workload.matmul(M, N, K)))
    m = CONV2D.match(spec)
    if m:
        n, h, w, ci, co, kernel, stride, pad = (int(x) for x in m.group(1).split(","))
        if min(n, h, w, ci, co, kernel, stride) < 1:
            raise ValueError(f"conv2d sizes, kernel and stride must be >= 1, got {spec!r}")
        if h + 2 * pad < kernel or w + 2 * pad < kernel:
            raise ValueError(f"conv2d kernel larger than the padded input in {spec!r}")
        return _as_module(
            te.create_prim_func(te_workload.conv2d_nhwc(n, h, w, ci, co, kernel, stride, pad))
        )
    if spec.endswith(".py") or os.sep in spec:
        return _from_tvmscript(spec)
    name, sep, index = spec.partition(":")
    if not sep or name not in te_workload.CONFIGS or not index.isdigit():
        raise ValueError(
            f"unknown workload {spec!r}: use NAME:INDEX with NAME one of "
            f"{sorted(te_workload.CONFIGS)} (e.g. C2D:0), matmul:M,N,K (e.g. matmul:512,512,512), "
            "conv2d:N,H,W,CI,CO,KERNEL,STRIDE,PAD (e.g. conv2d:1,56,56,64,64,3,1,1), "
            "or the path of a TVMScript .py file"
        )
    params = te_workload.CONFIGS[name][1]
    idx = int(index)
    if idx >= len(params):
        raise ValueError(f"workload {name} has indices 0..{len(params) - 1}, got {idx}")
    return _as_module(te_workload.create_te_workload(name, idx))


def _as_module(func) -> tvm.IRModule:
    if isinstance(func, tvm.IRModule):
        return func
    return tvm.IRModule({"main": func.with_attr("global_symbol", "main")})


def _from_tvmscript(path: str) -> tvm.IRModule:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"TVMScript workload file not found: {path}")
    # Import it as a real module: TVMScript's parser reads the source through sys.modules.
    mod_name = f"_ms_droplet_workload_{abs(hash(os.path.abspath(path)))}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)  # the user's own workload file
    except SyntaxError as err:
        where = f"{path}:{err.lineno}" if err.lineno else path
        raise ValueError(
            f"{where}: Python syntax error in the workload file: {err.msg}; fix the file "
            "(it must define a TVMScript IRModule or PrimFunc)"
        ) from None
    except tvm.error.DiagnosticError as err:
        # TVMScript's parser reports through a diagnostic: show it, not just the hint line.
        raise ValueError(
            f"{path}: TVMScript error in the workload file:\n{str(err).strip()}\nfix the file"
        ) from None
    except Exception as err:  # the user's own code: any error is a bad workload file
        raise ValueError(
            f"{path}: running the workload file raised {type(err).__name__}: {err}; fix the file"
        ) from None
    finally:
        sys.modules.pop(mod_name, None)
    scope = vars(module)
    for name in ("Module", "main", "mod", "func"):
        obj = scope.get(name)
        if isinstance(obj, tvm.IRModule | tvm.tirx.PrimFunc):
            return _as_module(obj)
    raise ValueError(
        f"{path} defines no IRModule or PrimFunc named Module, main, mod or func "
        "(decorate one with @I.ir_module or @T.prim_func)"
    )
