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
"""One package module as the patch carries it into ``search_strategy/``.

Literal renames (the logger's name), module names in docstrings, imports (:mod:`._imports`), the
scipy-free t-test for ``_stats`` (:mod:`._welch`), and docstring or comment lines that a rename
made longer than TVM's line length re-wrapped.
"""

from __future__ import annotations

import io
import tokenize
from pathlib import Path

from ._imports import rewrite_imports
from ._tree import LINE_LENGTH, MODULES, MS_PKG, TvmLayout, UpstreamError
from ._welch import stats_fallback

__all__ = ["render_module"]

_LOGGER_NAME = f"{MS_PKG}.droplet"

# Literal text replacements per module (each must match: a change of the source fails loudly).
_REPLACEMENTS: dict[str, list[tuple[str, str]]] = {
    "_logging": [
        ('logging.getLogger("ms_droplet")', f'logging.getLogger("{_LOGGER_NAME}")'),
        ("``ms_droplet.<task_name>``", f"``{_LOGGER_NAME}.<task_name>``"),
    ],
    "_strategy_log": [
        # upstream TVM has no WarmBuilder: only the longer timeout is the fix there
        ("use builder=ms_droplet.WarmBuilder() or ", "use "),
        ("re-measure both interleaved (ms-droplet tune does)", "re-measure both interleaved"),
    ],
}


def _package_dir() -> Path:
    return Path(__file__).resolve().parent.parent  # ms_droplet/


def _module_source(name: str) -> str:
    path = _package_dir() / f"{name}.py"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise UpstreamError(f"cannot read {path}: {err}") from None


def _docstring_and_comment_lines(source: str) -> set[int]:
    """1-based numbers of lines inside triple-quoted strings or holding a comment."""
    out: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.STRING and tok.string.lstrip("rbuRBU").startswith(('"""', "'''")):
            out.update(range(tok.start[0], tok.end[0] + 1))
        elif tok.type == tokenize.COMMENT:
            out.add(tok.start[0])
    return out


def _wrap_long_lines(source: str, module: str) -> str:
    """Re-wrap docstring/comment lines that a renaming made longer than TVM's line length."""
    text_lines = _docstring_and_comment_lines(source)
    out = []
    for num, line in enumerate(source.splitlines(keepends=True), start=1):
        closing = ""
        if len(line.rstrip("\n")) > LINE_LENGTH:
            stripped = line.strip()
            if len(stripped) > 6 and stripped.startswith('"""') and stripped.endswith('"""'):
                # a one-line docstring becomes a multi-line one, closing quotes on their own line
                indent = line[: len(line) - len(line.lstrip())]
                line = line.rstrip()[:-3] + "\n"
                closing = indent + '"""\n'
        while len(line.rstrip("\n")) > LINE_LENGTH:
            if num not in text_lines:
                raise UpstreamError(f"{module}.py line {num} is longer than {LINE_LENGTH}")
            body = line.rstrip("\n")
            indent = body[: len(body) - len(body.lstrip())]
            stripped = body.lstrip()
            prefix = indent + ("# " if stripped.startswith("#") else "")
            cut = body.rfind(" ", len(prefix) + 1, LINE_LENGTH + 1)
            if cut < 0:
                raise UpstreamError(f"{module}.py line {num} cannot be wrapped")
            out.append(body[:cut] + "\n")
            line = prefix + body[cut + 1 :] + "\n"
        out.append(line + closing)
    return "".join(out)


def render_module(name: str, layout: TvmLayout | None = None, deps: set[str] | None = None) -> str:
    """The upstream text of ms_droplet module ``name`` (e.g. ``"_stats"``).

    Parameters
    ----------
    name : str
        A key of :data:`MODULES`.
    layout : TvmLayout, optional
        The TVM checkout's exports; needed when the module imports ``tvm.s_tir.meta_schedule``.
    deps : set, optional
        Receives the ms_droplet modules that ``name`` imports.
    """
    if name not in MODULES:
        raise UpstreamError(f"{name} is not a module of the upstream patch")
    deps = set() if deps is None else deps
    source = _module_source(name)
    for old, new in _REPLACEMENTS.get(name, []):
        if old not in source:
            raise UpstreamError(f"{name}.py no longer contains {old!r}: update _REPLACEMENTS")
        source = source.replace(old, new)
    for src, dst in MODULES.items():
        source = source.replace(f"``{src}``", f"``{dst}``")
    source, header_end = rewrite_imports(source, name, layout, deps)
    if name == "_stats":
        source = stats_fallback(source, header_end)
    source = _wrap_long_lines(source, name)
    try:
        compile(source, f"{MODULES[name]}.py", "exec")
    except SyntaxError as err:  # pragma: no cover - a bug of this generator
        raise UpstreamError(f"generated {MODULES[name]}.py does not compile: {err}") from None
    for word in ("ms_droplet", "ms-droplet"):
        if word in source:
            raise UpstreamError(f"generated {MODULES[name]}.py still mentions {word}")
    return source
