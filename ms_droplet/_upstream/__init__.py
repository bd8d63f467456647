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
"""The upstream patch: Droplet Search as a built-in MetaSchedule strategy of apache/tvm.

The patch is generated from this package's own modules, so the two never drift:

* every module the strategy needs (``_strategy`` and what it imports, transitively) becomes a
  module of ``tvm.s_tir.meta_schedule.search_strategy`` (``droplet.py`` and ``_droplet_*.py``);
  imports of ``tvm.s_tir.meta_schedule`` become relative ones (resolved against the ``__init__``
  files of the TVM checkout), and the import blocks are re-sorted as TVM's ruff/isort wants them;
* scipy is not a TVM dependency: the Welch t-test of ``_stats`` uses scipy when it can be
  imported and otherwise the small Student-t CDF below (:func:`_welch_less_pvalue` and helpers,
  copied verbatim into the patch);
* ``"droplet"`` is added to ``SearchStrategy.create`` and its ``Literal`` types, and
  ``DropletStrategy`` is exported from ``search_strategy/__init__.py`` (TVM's
  ``meta_schedule/__init__.py`` re-exports no concrete strategy, so it is left alone);
* a test file in TVM's style is added under ``tests/python/s_tir/meta_schedule``; it is kept
  as a real Python file, ``templates/tvm_droplet_tests.py``, that ruff checks with TVM's settings
  (``templates/ruff.toml``) and the end-to-end test runs with pytest inside a patched TVM.

The output is a ``git format-patch``-style mail (``git am`` or ``git apply`` it) whose diff is
taken against the files found in the given TVM checkout.

Modules: ``_tree`` (paths, module names, the checkout's exports), ``_render`` (one module as
carried upstream) with ``_imports`` (import rewriting and sorting) and ``_welch`` (the scipy-free
t-test), ``_tvm_edits`` (edits of existing TVM files), ``_mail`` (the patch mail), and this file
(the list of files and writing the patch).
"""

from __future__ import annotations

import os
from pathlib import Path

from ._mail import AUTHOR, render_patch
from ._render import render_module
from ._tree import (
    MODULES,
    ROOT_MODULE,
    SS_DIR,
    TEST_PATH,
    PatchFile,
    TvmLayout,
    UpstreamError,
)
from ._tvm_edits import patch_init, patch_search_strategy

__all__ = [
    "MODULES",
    "SS_DIR",
    "TEST_PATH",
    "TEST_TEMPLATE",
    "TVM_RUFF_CONFIG",
    "PatchFile",
    "UpstreamError",
    "generate_files",
    "render_module",
    "render_patch",
    "write_patch",
]

_TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The TVM test file the patch adds at :data:`TEST_PATH`, as it is written there.
TEST_TEMPLATE = _TEMPLATES / "tvm_droplet_tests.py"
#: apache/tvm's ruff settings, which the template (and every generated file) must pass.
TVM_RUFF_CONFIG = _TEMPLATES / "ruff.toml"


def generate_files(tvm_source: str | os.PathLike) -> list[PatchFile]:
    """The files of the patch against the TVM checkout ``tvm_source`` (unchanged ones left out).

    Raises
    ------
    UpstreamError
        When ``tvm_source`` does not have the v0.27 layout, or this package's source changed in a
        way the generator does not know how to carry upstream.
    """
    root = Path(tvm_source)
    layout = TvmLayout.read(root)

    def old(rel: str) -> str | None:
        path = root / rel
        return path.read_text(encoding="utf-8") if path.is_file() else None

    files = []
    todo, done = [ROOT_MODULE], set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        deps: set[str] = set()
        text = render_module(name, layout, deps)
        todo.extend(sorted(deps - done))
        rel = f"{SS_DIR}/{MODULES[name]}.py"
        files.append(PatchFile(rel, old(rel), text))
    for rel, edit in (
        (f"{SS_DIR}/search_strategy.py", patch_search_strategy),
        (f"{SS_DIR}/__init__.py", patch_init),
    ):
        text = old(rel)
        assert text is not None  # checked by _Layout.read
        files.append(PatchFile(rel, text, edit(text)))
    files.append(PatchFile(TEST_PATH, old(TEST_PATH), TEST_TEMPLATE.read_text(encoding="utf-8")))
    return sorted((f for f in files if f.old != f.new), key=lambda f: f.path)


def write_patch(
    tvm_source: str | os.PathLike, out: str | os.PathLike, *, author: str = AUTHOR
) -> list[PatchFile]:
    """Generate the patch against ``tvm_source`` and write it to ``out``; return its files."""
    files = generate_files(tvm_source)
    text = render_patch(files, author=author)
    Path(out).write_text(text, encoding="utf-8")
    return files
