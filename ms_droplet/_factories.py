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
"""Factories shared by the command line, the tune driver and the benchmarks.

The target, the runner (local or through an RPC tracker), the builder and the description of the
machine are made here, once, so that ``ms-droplet tune``, ``ms-droplet bench`` and
``python -m ms_droplet.bench.builder`` measure with the same settings.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from typing import Any

import tvm
from tvm.s_tir import meta_schedule as ms

from ._version import __version__

__all__ = [
    "cpu_model",
    "host_target",
    "machine_info",
    "make_builder",
    "parse_target",
    "runner_factory",
]


def host_target(num_cores: int | None = None) -> tvm.target.Target:
    """This CPU as an llvm target (a dict with ``num-cores``, as MetaSchedule wants it).

    Parameters
    ----------
    num_cores : int, optional
        The target's ``num-cores``; all logical CPUs by default.
    """
    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": num_cores or os.cpu_count() or 1,
        }
    )


def parse_target(spec: str, num_cores: int | None = None) -> tvm.target.Target:
    """The target of a ``--target`` value: ``"host"`` or a JSON target dict.

    Raises
    ------
    ValueError
        For text that is not ``host`` or a JSON object, an invalid target, a CPU target without
        ``num-cores`` (or with one below 1), a CPU LLVM does not know, or a kind that cannot be
        measured here; the message names the fix.
    """
    if spec == "host":
        return host_target(num_cores)
    try:
        config = json.loads(spec)
    except json.JSONDecodeError:
        raise ValueError(
            "--target must be 'host' or a JSON dict like "
            f'\'{{"kind": "llvm", "num-cores": 2}}\', got {spec!r}'
        ) from None
    if not isinstance(config, dict):
        raise ValueError(f"--target must be a JSON object, got {spec!r}")
    try:
        target = tvm.target.Target(config)
    except Exception as err:  # TVM raises several error types for bad targets
        raise ValueError(f"invalid --target {spec!r}: {err}") from None
    if target.kind.name == "llvm" and "num-cores" not in config:
        raise ValueError('a CPU --target needs "num-cores" (MetaSchedule requires it)')
    cores = config.get("num-cores")
    if cores is not None and (not isinstance(cores, int) or isinstance(cores, bool) or cores < 1):
        raise ValueError(f'"num-cores" of --target must be a whole number >= 1, got {cores!r}')
    mcpu = config.get("mcpu")
    if target.kind.name == "llvm" and mcpu is not None:
        triple = str(target.attrs.get("mtriple") or tvm.target.codegen.llvm_get_system_triple())
        if not tvm.target.codegen.llvm_is_valid_cpu(str(mcpu), triple):
            raise ValueError(
                f"LLVM does not know the CPU {mcpu!r} (mcpu of --target) for {triple}; use "
                f"one it knows, e.g. this machine's {tvm.target.codegen.llvm_get_system_cpu()!r}"
            )
    if target.kind.name not in ("llvm", "c"):
        raise ValueError(
            f"target kind {target.kind.name!r} cannot be measured on this machine "
            "without an RPC runner; use an llvm target"
        )
    return target


def _tracker_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--rpc-tracker must be HOST:PORT, e.g. 127.0.0.1:9190, got {text!r}")
    return host, int(port)


def runner_factory(
    *,
    number: int,
    repeat: int,
    min_repeat_ms: int,
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    session_timeout_sec: int = 60,
    session_priority: int = 1,
    max_workers: int | None = None,
) -> tuple[Callable[[], ms.runner.Runner], Callable[[], Any] | None]:
    """``(make_runner, open_session)`` for measuring here or on the devices of an RPC tracker.

    Parameters
    ----------
    number, repeat, min_repeat_ms : int
        The runner's ``EvaluatorConfig`` (CPU cache flushing off).
    rpc_tracker : str, optional
        ``HOST:PORT`` of a TVM RPC tracker; None measures on this machine (``LocalRunner``).
    rpc_key : str, optional
        The device key the servers registered with (required with ``rpc_tracker``).
    session_timeout_sec, session_priority, max_workers
        ``RPCConfig`` / ``RPCRunner`` settings.

    Returns
    -------
    make_runner : Callable[[], Runner]
        Makes a new runner.
    open_session : Callable[[], RPCSession] or None
        Opens a session on a device of the tracker (to re-measure there); None locally.

    Raises
    ------
    ValueError
        For a malformed tracker address or a tracker without a key.
    """
    evaluator = ms.runner.EvaluatorConfig(
        number=number,
        repeat=repeat,
        min_repeat_ms=min_repeat_ms,
        enable_cpu_cache_flush=False,
    )
    if not rpc_tracker:
        return (lambda: ms.runner.LocalRunner(evaluator_config=evaluator)), None
    host, port = _tracker_address(rpc_tracker)
    if not rpc_key:
        raise ValueError("--rpc-tracker needs --rpc-key (the servers' --key)")
    config = ms.runner.RPCConfig(
        tracker_host=host,
        tracker_port=port,
        tracker_key=rpc_key,
        session_timeout_sec=session_timeout_sec,
        session_priority=session_priority,
    )

    def make_runner() -> ms.runner.Runner:
        return ms.runner.RPCRunner(
            rpc_config=config, evaluator_config=evaluator, max_workers=max_workers
        )

    return make_runner, config.connect_server


def make_builder(
    kind: str | ms.builder.Builder, timeout_sec: float, *, max_workers: int | None = None
) -> tuple[ms.builder.Builder, bool]:
    """``(builder, owned)``: a builder by name, or ``kind`` itself when it is a builder already.

    ``"warm"`` makes a :class:`~ms_droplet.WarmBuilder`, ``"local"`` TVM's ``LocalBuilder``.
    ``owned`` says whether the caller made it here and must ``shutdown()`` it (warm builders).
    """
    if not isinstance(kind, str):
        return kind, False
    if kind == "warm":
        from ._builder import WarmBuilder

        return WarmBuilder(timeout_sec=timeout_sec, max_workers=max_workers), True
    if kind == "local":
        return ms.builder.LocalBuilder(timeout_sec=timeout_sec, max_workers=max_workers), False
    raise ValueError(f"unknown builder {kind!r}: use 'warm' or 'local'")


def cpu_model() -> str:
    """The CPU model name, as far as it can be found."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What a measurement was taken on: CPU model, logical cores, TVM, ms_droplet and Python."""
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "tvm_version": tvm.__version__,
        "ms_droplet_version": __version__,
        "python": platform.python_version(),
    }
