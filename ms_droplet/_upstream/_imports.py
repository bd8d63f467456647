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
"""Import rewriting: a package module's imports as the same module inside TVM needs them.

Relative imports of package modules become imports of their upstream names (:data:`MODULES`),
imports of ``tvm.s_tir.meta_schedule`` become relative ones (resolved against the TVM tree's
``__init__`` files), and every import block is re-sorted as TVM's ruff/isort wants it
(``known-first-party = ["tvm"]``).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass

from ._tree import LINE_LENGTH, MODULES, MS_PKG, SS_PKG, TvmLayout, UpstreamError

__all__ = ["rewrite_imports"]

_SECTIONS = ("future", "stdlib", "thirdparty", "firstparty", "local")


@dataclass
class _Import:
    level: int
    module: str  # "" for ``from . import x``
    names: list[tuple[str, str | None]]  # (name, asname)
    straight: bool = False  # ``import module``

    @property
    def section(self) -> str:
        if self.level > 0:
            return "local"
        top = self.module.split(".")[0]
        if top == "__future__":
            return "future"
        if top == "tvm":
            return "firstparty"
        if top in sys.stdlib_module_names:
            return "stdlib"
        return "thirdparty"


def _alias(name: str, asname: str | None) -> str:
    return name if asname is None else f"{name} as {asname}"


def _name_key(item: tuple[str, str | None]) -> tuple:
    name = item[0]
    if len(name) > 1 and name.isupper():
        kind = 0  # constant
    elif name[:1].isupper():
        kind = 1  # class
    else:
        kind = 2
    return (kind, name.lower(), name, item[1] or "")


def _render_imports(imports: list[_Import], indent: str) -> str:
    """An import block sorted like ruff's isort (TVM: known-first-party = ["tvm"])."""
    merged: dict[tuple[int, str, bool], _Import] = {}
    for imp in imports:
        key = (imp.level, imp.module, imp.straight)
        if imp.straight:
            key = (imp.level, f"{imp.module}\0{imp.names[0][1]}", True)
        if key in merged:
            for item in imp.names:
                if item not in merged[key].names:
                    merged[key].names.append(item)
        else:
            merged[key] = _Import(imp.level, imp.module, list(imp.names), imp.straight)
    chunks = []
    for section in _SECTIONS:
        members = [imp for imp in merged.values() if imp.section == section]
        if not members:
            continue
        members.sort(key=lambda i: (not i.straight, -i.level, i.module.lower(), i.module))
        lines = []
        for imp in members:
            if imp.straight:
                lines.append(f"{indent}import {_alias(imp.module, imp.names[0][1])}")
                continue
            names = [_alias(*item) for item in sorted(imp.names, key=_name_key)]
            head = f"{indent}from {'.' * imp.level}{imp.module} import "
            one_line = head + ", ".join(names)
            if len(one_line) <= LINE_LENGTH:
                lines.append(one_line)
            else:
                body = "".join(f"{indent}    {n},\n" for n in names)
                lines.append(f"{head}(\n{body}{indent})")
        chunks.append("\n".join(lines))
    return "\n\n".join(chunks) + "\n"


def _convert(
    node: ast.stmt, module: str, layout: TvmLayout | None, deps: set[str]
) -> list[_Import]:
    """The upstream form of one import statement of ms_droplet module ``module``."""
    where = f"{module}.py line {node.lineno}"
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in ("ms_droplet", "scipy") or alias.name.startswith(MS_PKG):
                raise UpstreamError(f"{where}: cannot carry `import {alias.name}` upstream")
            out.append(_Import(0, alias.name, [(alias.name, alias.asname)], straight=True))
        return out
    assert isinstance(node, ast.ImportFrom)
    names = [(a.name, a.asname) for a in node.names]
    if node.level == 1:
        if node.module not in MODULES:
            raise UpstreamError(
                f"{where}: `from .{node.module} import ...` has no upstream counterpart; "
                "add the module to ms_droplet._upstream._tree.MODULES"
            )
        deps.add(node.module)
        return [_Import(1, MODULES[node.module], names)]
    if node.level > 1 or node.module is None:
        raise UpstreamError(f"{where}: unsupported relative import")
    mod = node.module
    top = mod.split(".")[0]
    if top == "scipy":
        if module != "_stats":
            raise UpstreamError(f"{where}: scipy is not a TVM dependency")
        return []  # replaced by the optional import and the fallback
    if top == "ms_droplet":
        raise UpstreamError(f"{where}: absolute import of ms_droplet")
    if mod in (MS_PKG, SS_PKG):
        if layout is None:
            raise UpstreamError(f"{where}: needs the TVM checkout to resolve {mod}")
        out = []
        for item in names:
            level, sub = layout.resolve(mod, item[0])
            out.append(_Import(level, sub, [item]))
        return out
    if mod.startswith(SS_PKG + "."):
        return [_Import(1, mod[len(SS_PKG) + 1 :], names)]
    if mod.startswith(MS_PKG + "."):
        return [_Import(2, mod[len(MS_PKG) + 1 :], names)]
    return [_Import(0, mod, names)]


def _import_runs(body: list[ast.stmt]) -> list[list[ast.stmt]]:
    runs: list[list[ast.stmt]] = []
    current: list[ast.stmt] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            current.append(node)
        else:
            if current:
                runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def rewrite_imports(
    source: str, module: str, layout: TvmLayout | None, deps: set[str]
) -> tuple[str, int]:
    """Rewrite and re-sort every import block; also return the line after the header block."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    runs = [(run, "") for run in _import_runs(tree.body)]
    for node in tree.body:
        if (
            isinstance(node, ast.If)
            and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING"
        ):
            indent = " " * node.body[0].col_offset
            runs += [(run, indent) for run in _import_runs(node.body)]
    if not runs:
        return source, 0
    header_end = runs[0][0][-1].end_lineno or 0
    edits = []
    for run, indent in runs:
        start, end = run[0].lineno, run[-1].end_lineno or run[-1].lineno
        covered = {ln for node in run for ln in range(node.lineno, (node.end_lineno or 0) + 1)}
        for ln in range(start, end + 1):
            if ln not in covered and lines[ln - 1].strip():
                raise UpstreamError(f"{module}.py line {ln}: unexpected text in an import block")
            if "#" in lines[ln - 1]:
                raise UpstreamError(f"{module}.py line {ln}: comment in an import block")
        imports = [imp for node in run for imp in _convert(node, module, layout, deps)]
        text = _render_imports(imports, indent) if imports else ""
        edits.append((start, end, text))
    for start, end, text in sorted(edits, reverse=True):
        lines[start - 1 : end] = [text] if text else []
        if not text and start - 1 < len(lines) and not lines[start - 1].strip():
            del lines[start - 1]  # drop the blank line left by an emptied block
    new_header_end = header_end
    for start, end, text in edits:
        if start <= header_end:
            new_header_end += text.count("\n") - (end - start + 1)
    return "".join(lines), new_header_end
