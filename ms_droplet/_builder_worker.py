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
"""The worker side of :class:`~ms_droplet.WarmBuilder`: what runs inside a worker process.

A worker is started as ``python -c BOOTSTRAP READ_FD WRITE_FD`` with its settings in the
``WORKER_ENV`` environment variable. The bootstrap ties the worker's life to its parent
(parent-death signal, watchdog thread, SIGINT ignored), then executes *this file* as a script,
so a worker never imports the ``ms_droplet`` package (nor what importing it registers); this
module therefore imports nothing from ``ms_droplet``.

Protocol: the parent writes requests ``(command, args)`` pickled with cloudpickle, the worker
answers each with ``Response`` = ``(None, value)`` or ``(traceback, None)``; every message is a
little-endian int32 length followed by that many bytes. Commands: ``warm_up(f_build, f_export,
initializer)`` (the expensive imports, once) and ``build(payload)`` (one candidate). The parent
(:mod:`ms_droplet._builder_pool`) enforces every timeout.
"""

from __future__ import annotations

import os
import pickle
import struct
import traceback
from collections.abc import Callable
from typing import Any

from tvm.ir import IRModule
from tvm.runtime import Module, Tensor, load_param_dict, save_param_dict
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
from tvm.s_tir.meta_schedule.utils import get_global_func_with_default_on_worker
from tvm.target import Target

__all__ = [
    "BOOTSTRAP",
    "HEADER",
    "PROGRAM",
    "T_BUILD",
    "T_EXPORT",
    "WORKER_ENV",
    "Response",
    "deserialize_params",
    "main",
    "serialize_params",
]

#: The length prefix of every message: a little-endian int32.
HEADER = struct.Struct("<i")

T_BUILD = Callable[[IRModule, Target, dict[str, Tensor] | None], Module]
T_EXPORT = Callable[[Module], str]

#: This file, which the worker processes run (without importing the ``ms_droplet`` package).
PROGRAM = os.path.abspath(__file__)

#: Environment variable through which the parent hands its settings to a new worker.
WORKER_ENV = "_MS_DROPLET_BUILDER_WORKER"

#: Code run by ``python -c`` in a new worker; it ends in :func:`main` of this file.
BOOTSTRAP = """\
import json, os, signal, sys, threading, time
_cfg = json.loads(os.environ.pop("_MS_DROPLET_BUILDER_WORKER"))
# The parent owns the worker's life time: terminal Ctrl-C goes to the parent only.
signal.signal(signal.SIGINT, signal.SIG_IGN)
if _cfg["pdeathsig"]:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except Exception:
        pass
if os.getppid() != _cfg["parent"]:
    os._exit(0)
def _watch_parent(parent=_cfg["parent"]):
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)
threading.Thread(target=_watch_parent, name="parent-watchdog", daemon=True).start()
sys.path[:] = _cfg["sys_path"] + [p for p in sys.path if p not in _cfg["sys_path"]]
_program = {"__name__": "__ms_droplet_builder_worker__", "__file__": _cfg["program"]}
with open(_cfg["program"], encoding="utf-8") as _source:
    exec(compile(_source.read(), _cfg["program"], "exec"), _program)
_program["main"](int(sys.argv[1]), int(sys.argv[2]))
"""

#: Response of a worker: ``(None, value)`` on success, ``(traceback, None)`` on an exception.
Response = tuple[str | None, Any]


#: Build and export functions of this worker process, resolved once by ``_worker_warm_up``.
_STATE: dict[str, Any] = {}


def serialize_params(params: dict[str, Tensor] | None) -> bytearray | None:
    """A candidate's parameters as bytes for the pipe (the parent's side)."""
    if params is None:
        return None
    return save_param_dict(params)


def deserialize_params(params: bytearray | None) -> dict[str, Tensor] | None:
    """The parameters of :func:`serialize_params` back (the worker's side)."""
    if params is None:
        return None
    return load_param_dict(params)


def _worker_warm_up(
    f_build: str | T_BUILD | None,
    f_export: str | T_EXPORT | None,
    initializer: Callable[[], None] | None,
) -> int:
    """Prepare a worker process: run the initializer, resolve the functions, import TVM parts.

    Parameters
    ----------
    f_build : Union[None, str, T_BUILD]
        The build function, its global function name, or None for ``default_build``.
    f_export : Union[None, str, T_EXPORT]
        The export function, its global function name, or None for ``default_export``.
    initializer : Optional[Callable[[], None]]
        Called first, e.g. to register the global functions named by `f_build`/`f_export`.

    Returns
    -------
    pid : int
        The worker's process id.
    """
    if initializer is not None:
        initializer()
    _STATE["f_build"] = get_global_func_with_default_on_worker(f_build, default_build)
    _STATE["f_export"] = get_global_func_with_default_on_worker(f_export, default_export)
    # The expensive part: what `default_build`/`default_export` import on their first call.
    import tvm.s_tir.tensor_intrin  # noqa: F401
    from tvm.driver import build  # noqa: F401
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: F401
    from tvm.support.tar import tar  # noqa: F401

    return os.getpid()


def _worker_build(payload: bytes) -> str:
    """Build and export one candidate inside a warm worker.

    Parameters
    ----------
    payload : bytes
        The pickled ``(mod, target, serialized_params)`` of the candidate.

    Returns
    -------
    artifact_path : str
        The path of the exported module.
    """
    mod, target, params = pickle.loads(payload)
    rt_mod = _STATE["f_build"](mod, target, deserialize_params(params))
    return _STATE["f_export"](rt_mod)


_COMMANDS: dict[str, Callable[..., Any]] = {
    "warm_up": _worker_warm_up,
    "build": _worker_build,
}


def main(read_fd: int, write_fd: int) -> None:
    """The worker's loop: answer ``(command, args)`` requests until the parent goes away.

    Parameters
    ----------
    read_fd : int
        The pipe from the parent.
    write_fd : int
        The pipe to the parent.
    """
    with os.fdopen(read_fd, "rb") as reader, os.fdopen(write_fd, "wb") as writer:
        while True:
            header = reader.read(4)
            if len(header) < 4:
                return  # the parent closed the pipe
            (size,) = HEADER.unpack(header)
            request = reader.read(size)
            response: Response
            try:
                command, args = pickle.loads(request)  # the parent used cloudpickle
                response = (None, _COMMANDS[command](*args))
            except Exception:
                response = (traceback.format_exc(), None)
            data = pickle.dumps(response, protocol=pickle.HIGHEST_PROTOCOL)
            writer.write(HEADER.pack(len(data)) + data)
            writer.flush()
