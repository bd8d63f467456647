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
"""Files that survive a crash: atomic replacement, appends after a cut-off line, strict JSON.

* :func:`replace_atomically` writes a temporary file beside the target, fsyncs it and renames it
  over the target: a crash leaves the old file or the new one, never half of one.
* :func:`append_lines` first cuts a partial last line (left by a crash mid-write) off a
  line-oriented file, so the new lines never merge with it.
* :func:`json_safe` / :func:`write_json` never write ``Infinity`` or ``NaN`` (not JSON): a
  non-finite number becomes ``null``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any

__all__ = [
    "append_lines",
    "ensure_writable_dir",
    "json_safe",
    "replace_atomically",
    "trim_partial_line",
    "write_json",
]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 16


def ensure_writable_dir(path: str) -> None:
    """Create the folder ``path`` if needed and check that a file can be written in it.

    Raises
    ------
    OSError
        When it cannot be created or written to.
    """
    os.makedirs(path, exist_ok=True)
    probe = os.path.join(path, ".write_test")
    with open(probe, "w", encoding="utf-8"):
        pass
    os.remove(probe)


def replace_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically (temp file, fsync, ``os.replace``, dir fsync)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(os.path.dirname(path) or ".")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system can fsync a directory
    finally:
        os.close(fd)


def _partial_tail_start(f) -> int | None:
    """Offset of the partial last line of the open binary file ``f``; None if it ends whole."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return None
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return None
    pos = end
    while pos > 0:
        start = max(0, pos - _CHUNK)
        f.seek(start)
        chunk = f.read(pos - start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def trim_partial_line(path: str) -> bytes:
    """Cut a partial last line (no final newline) off ``path``; return the bytes cut (or b"").

    The cut bytes are appended to ``path + ".cut"`` first, so nothing is thrown away.
    """
    if not os.path.exists(path):
        return b""
    with open(path, "r+b") as f:
        start = _partial_tail_start(f)
        if start is None:
            return b""
        f.seek(start)
        cut = f.read()
        with open(f"{path}.cut", "ab") as keep:
            keep.write(cut + b"\n")
            keep.flush()
            os.fsync(keep.fileno())
        f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    logger.warning(
        "%s ended in a cut-off line (a crash mid-write): moved its %d byte(s) to %s.cut",
        path,
        len(cut),
        path,
    )
    return cut


def append_lines(path: str, lines: list[str]) -> None:
    """Append ``lines`` (each without its newline) to ``path`` and fsync them.

    A partial last line already in the file is cut off first (:func:`trim_partial_line`), so a
    resumed writer never glues its first line to the cut-off one.
    """
    if not lines:
        return
    trim_partial_line(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (``inf``, ``nan``) replaced by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str, data: Any, *, indent: int | None = 1) -> None:
    """Write ``data`` as strict JSON (no ``Infinity``/``NaN``: null instead), atomically."""
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False)
    replace_atomically(path, text.encode("utf-8"))
