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
"""One process at a time in a work dir: an exclusive ``fcntl`` lock on ``DIR/.lock``.

Two tunings appending to one JSON database interleave their lines, and MetaSchedule numbers the
workloads of its records by its in-memory count, so records can land on the wrong workload without
any error. Every command that writes a work dir (``ms-droplet tune``, ``ms-droplet bench`` for its
folder, ``ms-droplet db repair``, :func:`ms_droplet.relax.tune_relax`) holds this lock while it
writes; a second one fails at once with :class:`WorkDirLocked`, which names the holder and the fix.

The kernel releases the lock when the holder exits or crashes (even on SIGKILL), so a stale
``.lock`` file never blocks anyone; its content (the holder's pid and command) is only informative.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from types import TracebackType

__all__ = ["LOCK_FILE", "WorkDirLock", "WorkDirLocked", "lock_work_dir"]

#: The lock file inside a locked directory.
LOCK_FILE = ".lock"


class WorkDirLocked(RuntimeError):
    """Another process holds the lock of a work dir.

    Attributes
    ----------
    path : str
        The locked directory.
    holder : str
        What the lock file says about the holder (pid, command, start time), or ``""``.
    """

    def __init__(self, message: str, *, path: str, holder: str) -> None:
        super().__init__(message)
        self.path = path
        self.holder = holder


class WorkDirLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) gives it back."""

    def __init__(self, path: str, handle) -> None:
        self.path = path
        self._handle = handle

    @property
    def held(self) -> bool:
        """Whether this object still holds the lock."""
        return self._handle is not None

    def release(self) -> None:
        """Give the lock back (a no-op when released already)."""
        if self._handle is not None:
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> WorkDirLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path, encoding="utf-8", errors="replace") as f:
            return f.read(500).strip()
    except OSError:
        return ""


def lock_work_dir(
    work_dir: str,
    *,
    owner: str,
    fix: str = "wait for it to finish, or use another work dir",
) -> WorkDirLock:
    """Take the exclusive lock of ``work_dir`` (created if missing) without waiting.

    Parameters
    ----------
    work_dir : str
        The directory to lock.
    owner : str
        What holds the lock, e.g. ``"ms-droplet tune"`` (written into the lock file, shown to
        the process that finds the lock held).
    fix : str
        What a second process should do instead; ends the error message.

    Returns
    -------
    lock : WorkDirLock
        The held lock; use it as a context manager or call :meth:`WorkDirLock.release`.

    Raises
    ------
    WorkDirLocked
        When another process (or another open lock of this process) holds it.
    OSError
        When ``work_dir`` cannot be created or written (e.g. it is a file).
    """
    os.makedirs(work_dir, exist_ok=True)
    lock_path = os.path.join(work_dir, LOCK_FILE)
    handle = open(lock_path, "a+", encoding="utf-8")  # held until release()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        holder = _holder(lock_path)
        raise WorkDirLocked(
            f"{work_dir} is in use by another process ({holder or 'holder unknown'}); {fix}",
            path=work_dir,
            holder=holder,
        ) from None
    handle.seek(0)
    handle.truncate()
    command = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    handle.write(
        f"pid {os.getpid()}, {owner}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        + (f", command: {command[:200]}" if command else "")
        + "\n"
    )
    handle.flush()
    return WorkDirLock(work_dir, handle)
