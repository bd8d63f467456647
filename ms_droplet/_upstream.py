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
* a test file in TVM's style is added under ``tests/python/s_tir/meta_schedule``.

The output is a ``git format-patch``-style mail (``git am`` or ``git apply`` it) whose diff is
taken against the files found in the given TVM checkout.
"""

from __future__ import annotations

import ast
import difflib
import email.utils
import inspect
import io
import math
import os
import re
import sys
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path

from ._version import __version__

__all__ = [
    "MODULES",
    "TEST_PATH",
    "PatchFile",
    "UpstreamError",
    "generate_files",
    "render_module",
    "render_patch",
    "write_patch",
]

MS_DIR = "python/tvm/s_tir/meta_schedule"
SS_DIR = f"{MS_DIR}/search_strategy"
TEST_PATH = "tests/python/s_tir/meta_schedule/test_meta_schedule_search_strategy_droplet.py"
LINE_LENGTH = 100  # TVM's ruff line-length

_MS_PKG = "tvm.s_tir.meta_schedule"
_SS_PKG = f"{_MS_PKG}.search_strategy"
_ROOT_MODULE = "_strategy"

# ms_droplet module -> module of tvm.s_tir.meta_schedule.search_strategy in the patch
MODULES = {
    "_strategy": "droplet",
    "_descent": "_droplet_descent",
    "_stats": "_droplet_stats",
    "_decisions": "_droplet_decisions",
    "_candidates": "_droplet_candidates",
    "_logging": "_droplet_logging",
}

_LOGGER_NAME = f"{_MS_PKG}.droplet"

# Literal text replacements per module (each must match: a change of the source fails loudly).
_REPLACEMENTS: dict[str, list[tuple[str, str]]] = {
    "_logging": [
        ('logging.getLogger("ms_droplet")', f'logging.getLogger("{_LOGGER_NAME}")'),
        ("``ms_droplet.<task_name>``", f"``{_LOGGER_NAME}.<task_name>``"),
    ],
}

_AUTHOR = "Droplet Search contributors <droplet-search@users.noreply.github.com>"
_SUBJECT = "[MetaSchedule] Droplet Search as a built-in search strategy"
_BODY = """\
Add DropletStrategy (strategy="droplet"): TVM's EvolutionarySearch explores
the first trials of each task, then Droplet Search, a coordinate descent
over the trace's sampling decisions (perfect tiles, categorical choices,
compute locations) and parallel annotations, takes over. Every batch
re-measures the incumbent beside its neighbours and moves only when a
neighbour is faster by a one-sided Welch t-test (confirmed by a second
measurement by default).

Unlike post_optimization.Droplet, the strategy runs inside the task
scheduler: candidates are replayed and post-processed like MetaSchedule's
own mutants, measured in batches by the configured builder/runner and
committed to the Database by the usual measure callbacks.

scipy is used for the t-test when available, with a self-contained
Student-t CDF as fallback (scipy is not a TVM dependency).
"""


class UpstreamError(RuntimeError):
    """The patch cannot be generated (an unexpected TVM checkout or package source)."""


@dataclass(frozen=True)
class PatchFile:
    """One file of the patch: its path in the TVM checkout, old text (None: new) and new text."""

    path: str
    old: str | None
    new: str


# ---------------------------------------------------------------------------------------------
# Welch's t-test without scipy. These functions are copied verbatim into the patch's
# ``_droplet_stats.py``, where ``_scipy_stats`` is scipy.stats when it can be imported. Here it
# is always None, so that the functions below are the fallback itself (tested against scipy).
_scipy_stats = None


def _welch_less_pvalue(a, b) -> float:
    """One-sided p-value of Welch's t-test that the mean of ``a`` is less than that of ``b``.

    Uses ``scipy.stats.ttest_ind`` when scipy can be imported, otherwise the t distribution's CDF
    from the regularized incomplete beta function. Both sides need two samples or more and a
    positive pooled variance.
    """
    if _scipy_stats is not None:
        res = _scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less")
        return float(res.pvalue)
    t, df = _welch_t(a, b)
    return _student_t_cdf(t, df)


def _welch_t(a, b) -> tuple[float, float]:
    """Welch's t statistic of ``mean(a) - mean(b)`` and its degrees of freedom (Satterthwaite)."""
    na, nb = len(a), len(b)
    ma, mb = math.fsum(a) / na, math.fsum(b) / nb
    va = math.fsum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = math.fsum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    se2 = va + vb
    t = (ma - mb) / math.sqrt(se2)
    df = se2 * se2 / (va * va / (na - 1) + vb * vb / (nb - 1))
    return t, df


def _student_t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` (real, > 0) degrees of freedom at ``t``."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if math.isinf(t):
        return 0.0 if t < 0 else 1.0
    tail = 0.5 * _betainc(0.5 * df, 0.5, df / (df + t * t))  # P(T < -|t|)
    return tail if t < 0 else 1.0 - tail


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100000):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


_FALLBACK = (_welch_less_pvalue, _welch_t, _student_t_cdf, _betainc, _betacf)

_SCIPY_IMPORT = """\
try:
    from scipy import stats as _scipy_stats
except ImportError:  # scipy is optional: _welch_less_pvalue has its own Student-t CDF
    _scipy_stats = None
"""

_TTEST_CALL = re.compile(
    r"^(?P<indent>[ \t]*)res = stats\.ttest_ind\((?P<a>\w+), (?P<b>\w+), equal_var=False, "
    r'alternative="less"\)\n(?P=indent)pvalue = float\(res\.pvalue\)\n',
    re.MULTILINE,
)


# ---------------------------------------------------------------------------------------------
# Reading this package and the TVM checkout
def _package_dir() -> Path:
    return Path(__file__).resolve().parent


def _module_source(name: str) -> str:
    path = _package_dir() / f"{name}.py"
    try:
        return path.read_text(encoding="utf-8")
    except OSError as err:
        raise UpstreamError(f"cannot read {path}: {err}") from None


def _exports(init_file: Path) -> dict[str, str]:
    """Names an ``__init__.py`` imports from its submodules: name -> submodule (``from .x``)."""
    try:
        tree = ast.parse(init_file.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as err:
        raise UpstreamError(f"cannot read {init_file}: {err}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


@dataclass(frozen=True)
class _Layout:
    """What the TVM checkout's ``__init__`` files export (to make imports relative)."""

    ms_exports: dict[str, str]  # tvm.s_tir.meta_schedule
    ss_exports: dict[str, str]  # tvm.s_tir.meta_schedule.search_strategy

    @classmethod
    def read(cls, root: Path) -> _Layout:
        for rel in (
            f"{MS_DIR}/__init__.py",
            f"{SS_DIR}/__init__.py",
            f"{SS_DIR}/search_strategy.py",
        ):
            if not (root / rel).is_file():
                raise UpstreamError(
                    f"{root} is not an apache/tvm checkout with the v0.27 layout: {rel} is missing"
                )
        return cls(_exports(root / MS_DIR / "__init__.py"), _exports(root / SS_DIR / "__init__.py"))

    def resolve(self, package: str, name: str) -> tuple[int, str]:
        """Where ``from <package> import <name>`` comes from, relative to search_strategy/."""
        if package == _SS_PKG:
            sub = self.ss_exports.get(name)
            if sub is None:
                raise UpstreamError(f"{_SS_PKG} of the TVM checkout does not export {name}")
            return 1, sub
        sub = self.ms_exports.get(name)
        if sub is None:
            raise UpstreamError(f"{_MS_PKG} of the TVM checkout does not export {name}")
        if sub == "search_strategy":
            return self.resolve(_SS_PKG, name)
        return 2, sub


# ---------------------------------------------------------------------------------------------
# Import rewriting
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


def _convert(node: ast.stmt, module: str, layout: _Layout | None, deps: set[str]) -> list[_Import]:
    """The upstream form of one import statement of ms_droplet module ``module``."""
    where = f"{module}.py line {node.lineno}"
    if isinstance(node, ast.Import):
        out = []
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in ("ms_droplet", "scipy") or alias.name.startswith(_MS_PKG):
                raise UpstreamError(f"{where}: cannot carry `import {alias.name}` upstream")
            out.append(_Import(0, alias.name, [(alias.name, alias.asname)], straight=True))
        return out
    assert isinstance(node, ast.ImportFrom)
    names = [(a.name, a.asname) for a in node.names]
    if node.level == 1:
        if node.module not in MODULES:
            raise UpstreamError(
                f"{where}: `from .{node.module} import ...` has no upstream counterpart; "
                "add the module to ms_droplet._upstream.MODULES"
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
    if mod in (_MS_PKG, _SS_PKG):
        if layout is None:
            raise UpstreamError(f"{where}: needs the TVM checkout to resolve {mod}")
        out = []
        for item in names:
            level, sub = layout.resolve(mod, item[0])
            out.append(_Import(level, sub, [item]))
        return out
    if mod.startswith(_SS_PKG + "."):
        return [_Import(1, mod[len(_SS_PKG) + 1 :], names)]
    if mod.startswith(_MS_PKG + "."):
        return [_Import(2, mod[len(_MS_PKG) + 1 :], names)]
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


def _rewrite_imports(
    source: str, module: str, layout: _Layout | None, deps: set[str]
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


# ---------------------------------------------------------------------------------------------
# Rendering one module
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


def render_module(name: str, layout: _Layout | None = None, deps: set[str] | None = None) -> str:
    """The upstream text of ms_droplet module ``name`` (e.g. ``"_stats"``).

    Parameters
    ----------
    name : str
        A key of :data:`MODULES`.
    layout : _Layout, optional
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
    source, header_end = _rewrite_imports(source, name, layout, deps)
    if name == "_stats":
        source = _stats_fallback(source, header_end)
    source = _wrap_long_lines(source, name)
    try:
        compile(source, f"{MODULES[name]}.py", "exec")
    except SyntaxError as err:  # pragma: no cover - a bug of this generator
        raise UpstreamError(f"generated {MODULES[name]}.py does not compile: {err}") from None
    for word in ("ms_droplet", "ms-droplet"):
        if word in source:
            raise UpstreamError(f"generated {MODULES[name]}.py still mentions {word}")
    return source


def _stats_fallback(source: str, header_end: int) -> str:
    """Make the t-test of ``_stats`` work without scipy."""
    source, count = _TTEST_CALL.subn(
        r"\g<indent>pvalue = _welch_less_pvalue(\g<a>, \g<b>)\n", source
    )
    if count != 1:
        raise UpstreamError("_stats.py: the scipy t-test call to replace was not found")
    if re.search(r"\bstats\.", source):
        raise UpstreamError("_stats.py uses scipy.stats beyond ttest_ind: extend the fallback")
    lines = source.splitlines(keepends=True)
    lines.insert(header_end, "\n" + _SCIPY_IMPORT)
    fallback = "\n\n".join(inspect.getsource(fn) for fn in _FALLBACK)
    return "".join(lines).rstrip("\n") + "\n\n\n" + fallback


# ---------------------------------------------------------------------------------------------
# TVM files edited by the patch
def _insert_in_literal(text: str, anchor: str, where: str) -> str:
    """Add ``"droplet"`` as the last entry of the first ``Literal[...]`` block after ``anchor``."""
    start = text.find(anchor)
    if start < 0:
        raise UpstreamError(f"{where}: {anchor!r} not found")
    lit = text.find("Literal[", start)
    close = text.find("]", lit)
    if lit < 0 or close < 0:
        raise UpstreamError(f"{where}: no Literal[...] after {anchor!r}")
    block = text[lit:close]
    if '"droplet"' in block:
        return text
    entries = re.findall(r'^([ \t]+)"[\w-]+",\n', block, re.MULTILINE)
    if not entries:
        raise UpstreamError(f"{where}: the Literal after {anchor!r} is not one entry per line")
    last = block.rfind("\n", 0, len(block.rstrip(" \t"))) + 1
    pos = lit + last
    return text[:pos] + f'{entries[-1]}"droplet",\n' + text[pos:]


def _patch_search_strategy(text: str) -> str:
    where = f"{SS_DIR}/search_strategy.py"
    text = _insert_in_literal(text, "SearchStrategyType = Union[", where)
    text = _insert_in_literal(text, "def create(", where)
    if "DropletStrategy" in text:
        return text
    imp = re.search(
        r"^(?P<indent>[ \t]+)from \. import \([^)\n]*\n(?P<names>(?:[ \t]+\w+,\n)+)[ \t]*\)",
        text,
        re.MULTILINE,
    )
    if imp is None or "EvolutionarySearch" not in imp.group("names"):
        raise UpstreamError(f"{where}: the `from . import (...)` of create() was not found")
    names = [*re.findall(r"(\w+),", imp.group("names")), "DropletStrategy"]
    name_indent = re.match(r"[ \t]+", imp.group("names")).group(0)  # type: ignore[union-attr]
    new_names = "".join(f"{name_indent}{n},\n" for n in sorted(names, key=str.lower))
    text = text[: imp.start("names")] + new_names + text[imp.end("names") :]
    branch = re.search(
        r'^(?P<indent>[ \t]+)if kind == "replay-func":\n[ \t]+return ReplayFunc\(.*\n',
        text,
        re.MULTILINE,
    )
    if branch is None:
        raise UpstreamError(f'{where}: the `if kind == "replay-func":` branch was not found')
    ind = branch.group("indent")
    new_branch = f'{ind}if kind == "droplet":\n{ind}    return DropletStrategy(*args, **kwargs)\n'
    return text[: branch.end()] + new_branch + text[branch.end() :]


def _patch_init(text: str) -> str:
    line = "from .droplet import DropletStrategy\n"
    if line in text:
        return text
    anchor = "from .evolutionary_search import EvolutionarySearch\n"
    if anchor not in text:
        raise UpstreamError(f"{SS_DIR}/__init__.py: {anchor.strip()!r} not found")
    return text.replace(anchor, line + anchor)


# ---------------------------------------------------------------------------------------------
# The TVM test file
_TVM_TEST = r'''# Licensed to the Apache Software Foundation (ASF) under one
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
"""Test Meta Schedule DropletStrategy"""

# pylint: disable=missing-function-docstring

import math
import os
import tempfile

import pytest

import tvm
import tvm.testing
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.search_strategy import DropletStrategy, _droplet_stats
from tvm.s_tir.meta_schedule.testing.dummy_object import (
    DummyBuilder,
    DummyMutator,
    DummyRunner,
)
from tvm.s_tir.schedule import Schedule
from tvm.script import tirx as T

# pylint: disable=missing-class-docstring,invalid-name,no-member,no-self-argument
# fmt: off

@tvm.script.ir_module
class Matmul:
    @T.prim_func(s_tir=True)
    def main(a: T.handle, b: T.handle, c: T.handle) -> None: # type: ignore
        T.func_attr({"global_symbol": "main"})
        A = T.match_buffer(a, (32, 32), "float32")
        B = T.match_buffer(b, (32, 32), "float32")
        C = T.match_buffer(c, (32, 32), "float32")
        for i, j, k in T.grid(32, 32, 32):
            with T.sblock("matmul"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                with T.init():
                    C[vi, vj] = 0.0 # type: ignore
                C[vi, vj] = C[vi, vj] + A[vi, vk] * B[vk, vj]

# fmt: on
# pylint: enable=missing-class-docstring,invalid-name,no-member,no-self-argument

TARGET = tvm.target.Target({"kind": "llvm", "num-cores": 1})

# (challenger, control, one-sided Welch p-value of "challenger is faster") from scipy.stats
WELCH_CASES = [
    ([1.0, 1.1, 0.9], [2.0, 2.1, 1.9], 0.0009482119867104708),
    ([1.0, 1.2, 1.1, 0.95], [1.05, 1.15, 1.3], 0.15250526036196144),
    ([3.0, 2.0, 2.5, 2.2, 2.4], [1.0, 1.5, 1.2], 0.9942588191793837),
    ([0.5, 0.51], [0.5, 0.52, 0.49, 0.55, 0.5, 0.53], 0.19525731124140183),
]


def _schedule_matmul(sch: Schedule):
    block = sch.get_sblock("matmul")
    i, j, k = sch.get_loops(block=block)
    i_0, i_1, i_2, i_3 = sch.split(i, sch.sample_perfect_tile(i, n=4))
    j_0, j_1, j_2, j_3 = sch.split(j, sch.sample_perfect_tile(j, n=4))
    k_0, k_1 = sch.split(k, sch.sample_perfect_tile(k, n=2))
    sch.reorder(i_0, j_0, i_1, j_1, k_0, i_2, j_2, k_1, i_3, j_3)


def _space_generator() -> ms.space_generator.ScheduleFn:
    return ms.space_generator.ScheduleFn(
        sch_fn=_schedule_matmul,
        sch_rules=[],
        postprocs=[],
        mutator_probs={DummyMutator(): 1.0},
    )


def _tiles(sch: Schedule) -> list:
    trace = sch.trace
    return [
        tuple(int(x) for x in trace.decisions[inst])
        for inst in trace.insts
        if inst.kind.name == "SamplePerfectTile"
    ]


def _latency(tiles: list) -> float:
    """A smooth landscape over all tile factors with a single best tiling."""
    best = [(2, 2, 4, 2), (1, 4, 2, 4), (4, 8)]
    distance = sum(
        abs(math.log2(f / b)) for tile, opt in zip(tiles, best) for f, b in zip(tile, opt)
    )
    return 1e-3 * (1.0 + distance)


def test_droplet_create():
    strategy = ms.search_strategy.SearchStrategy.create("droplet", pvalue=0.01)
    assert isinstance(strategy, DropletStrategy)
    assert isinstance(strategy, ms.search_strategy.SearchStrategy)
    assert strategy.pvalue == 0.01
    assert isinstance(ms.search_strategy.create("droplet"), DropletStrategy)
    context = ms.TuneContext(
        mod=Matmul,
        target=TARGET,
        space_generator=_space_generator(),
        search_strategy="droplet",
        num_threads=1,
    )
    assert isinstance(context.search_strategy, ms.search_strategy.SearchStrategy)
    with pytest.raises(ValueError):
        DropletStrategy(pvalue=0.0)
    with pytest.raises(TypeError):
        DropletStrategy(evolutionary={"no_such_setting": 1})


@pytest.mark.parametrize("use_scipy", [True, False])
def test_droplet_welch_pvalue(monkeypatch, use_scipy):
    if not use_scipy:
        monkeypatch.setattr(_droplet_stats, "_scipy_stats", None)
    elif _droplet_stats._scipy_stats is None:
        return  # scipy is optional; the fallback is checked by the other parametrization
    for challenger, control, pvalue in WELCH_CASES:
        log_a = [math.log(x) for x in challenger]
        log_b = [math.log(x) for x in control]
        assert abs(_droplet_stats._welch_less_pvalue(log_a, log_b) - pvalue) < 1e-6
    faster = _droplet_stats.compare([1.0, 1.01, 0.99], [2.0, 2.02, 1.98])
    assert faster.ratio == pytest.approx(0.5)
    assert faster.significant(0.05)
    assert not _droplet_stats.compare([2.0, 2.02, 1.98], [1.0, 1.01, 0.99]).significant(0.05)
    assert _droplet_stats.compare([1.0], [2.0, 2.1]).pvalue is None


def test_droplet_search_strategy():
    num_trials_per_iter = 8
    max_trials = 64
    num_evolutionary_trials = 16
    context = ms.TuneContext(
        mod=Matmul,
        space_generator=_space_generator(),
        search_strategy=DropletStrategy(
            num_evolutionary_trials=num_evolutionary_trials,
            evolutionary={"population_size": 16, "init_min_unmeasured": 8},
        ),
        target=TARGET,
        num_threads=1,  # because we are using a mutator from the python side
        rand_state=1,
    )
    database = ms.database.MemoryDatabase()
    workload = database.commit_workload(Matmul)
    strategy = context.search_strategy
    strategy.pre_tuning(
        max_trials=max_trials,
        num_trials_per_iter=num_trials_per_iter,
        design_spaces=context.space_generator.generate_design_space(context.mod),
        database=database,
        cost_model=ms.cost_model.RandomModel(seed=1),
    )
    batches = []
    candidates = strategy.generate_measure_candidates()
    while candidates is not None:
        assert 0 < len(candidates) <= num_trials_per_iter
        batches.append([_tiles(c.sch) for c in candidates])
        results = []
        for candidate, tiles in zip(candidates, batches[-1]):
            base = _latency(tiles)
            run_secs = [base, base * 1.01, base * 0.99]
            results.append(ms.runner.RunnerResult(run_secs=run_secs, error_msg=None))
            database.commit_tuning_record(
                ms.database.TuningRecord(
                    trace=candidate.sch.trace,
                    workload=workload,
                    run_secs=run_secs,
                    target=context.target,
                    args_info=candidate.args_info,
                )
            )
        strategy.notify_runner_results(candidates, results)
        candidates = strategy.generate_measure_candidates()
    strategy.post_tuning()

    assert sum(len(b) for b in batches) <= max_trials
    seen, best_explored, descent = 0, math.inf, []
    for batch in batches:
        if seen < num_evolutionary_trials:
            best_explored = min([best_explored] + [_latency(t) for t in batch])
        else:
            descent.append(batch)
        seen += len(batch)
    assert len(descent) >= 2
    for batch in batches:  # tile moves keep every tiling perfect
        for tiles in batch:
            assert [math.prod(t) for t in tiles] == [32, 32, 32]
    for batch in descent:  # the control first, then moves along one coordinate
        control = batch[0]
        for tiles in batch[1:]:
            assert sum(a != b for a, b in zip(tiles, control)) == 1
    best_final = min(_latency(t) for batch in batches for t in batch)
    assert best_final < best_explored


def test_droplet_tune_tir():
    with tempfile.TemporaryDirectory() as work_dir:
        database = ms.tune_tir(
            mod=Matmul,
            target=TARGET,
            work_dir=work_dir,
            max_trials_global=24,
            num_trials_per_iter=8,
            builder=DummyBuilder(),
            runner=DummyRunner(),
            cost_model="random",
            measure_callbacks=[ms.measure_callback.AddToDatabase()],
            strategy=DropletStrategy(
                num_evolutionary_trials=8,
                evolutionary={"population_size": 16, "init_min_unmeasured": 8},
            ),
            num_tuning_cores=1,
            seed=1,
        )
        records = database.get_all_tuning_records()
        assert 8 < len(records) <= 24
        assert all(len(record.run_secs) > 0 for record in records)
        logs = ""
        for name in os.listdir(os.path.join(work_dir, "logs")):
            with open(os.path.join(work_dir, "logs", name), encoding="utf-8") as log_file:
                logs += log_file.read()
        assert "Droplet: exploring with EvolutionarySearch for 8 trial(s)" in logs
        assert "descent starts from the best record" in logs


if __name__ == "__main__":
    tvm.testing.main()
'''


# ---------------------------------------------------------------------------------------------
# The patch
def generate_files(tvm_source: str | os.PathLike) -> list[PatchFile]:
    """The files of the patch against the TVM checkout ``tvm_source`` (unchanged ones left out).

    Raises
    ------
    UpstreamError
        When ``tvm_source`` does not have the v0.27 layout, or this package's source changed in a
        way the generator does not know how to carry upstream.
    """
    root = Path(tvm_source)
    layout = _Layout.read(root)

    def old(rel: str) -> str | None:
        path = root / rel
        return path.read_text(encoding="utf-8") if path.is_file() else None

    files = []
    todo, done = [_ROOT_MODULE], set()
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
        (f"{SS_DIR}/search_strategy.py", _patch_search_strategy),
        (f"{SS_DIR}/__init__.py", _patch_init),
    ):
        text = old(rel)
        assert text is not None  # checked by _Layout.read
        files.append(PatchFile(rel, text, edit(text)))
    files.append(PatchFile(TEST_PATH, old(TEST_PATH), _TVM_TEST))
    return sorted((f for f in files if f.old != f.new), key=lambda f: f.path)


def _diff(f: PatchFile) -> tuple[str, int, int]:
    """The ``diff --git`` section of one file, with its added and removed line counts."""
    old_lines = [] if f.old is None else f.old.splitlines(keepends=True)
    head = f"diff --git a/{f.path} b/{f.path}\n"
    if f.old is None:
        head += "new file mode 100644\n"
    hunks = list(
        difflib.unified_diff(
            old_lines,
            f.new.splitlines(keepends=True),
            "/dev/null" if f.old is None else f"a/{f.path}",
            f"b/{f.path}",
            n=3,
        )
    )
    added = sum(1 for h in hunks[2:] if h.startswith("+"))
    removed = sum(1 for h in hunks[2:] if h.startswith("-"))
    body = "".join(h if h.endswith("\n") else h + "\n\\ No newline at end of file\n" for h in hunks)
    return head + body, added, removed


def render_patch(files: list[PatchFile], *, author: str = _AUTHOR, date: str | None = None) -> str:
    """A ``git format-patch``-style mail holding ``files``."""
    if not files:
        raise UpstreamError("the TVM checkout already has this version of the droplet strategy")
    if date is None:
        epoch = os.environ.get("SOURCE_DATE_EPOCH")
        date = email.utils.formatdate(float(epoch) if epoch else time.time(), localtime=True)
    diffs = [_diff(f) for f in files]
    width = max(len(f.path) for f in files)
    most = max(added + removed for _, added, removed in diffs)
    scale = min(1.0, 40.0 / most) if most else 1.0
    stat_lines = []
    for f, (_, added, removed) in zip(files, diffs, strict=True):
        bar = "+" * math.ceil(added * scale) + "-" * math.ceil(removed * scale)
        stat_lines.append(f" {f.path.ljust(width)} | {added + removed:4d} {bar}")
    total_add = sum(d[1] for d in diffs)
    total_rm = sum(d[2] for d in diffs)
    summary = f" {len(files)} files changed, {total_add} insertions(+), {total_rm} deletions(-)\n"
    modes = "".join(f" create mode 100644 {f.path}\n" for f in files if f.old is None)
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: {author}\n"
        f"Date: {date}\n"
        f"Subject: [PATCH] {_SUBJECT}\n"
        "\n"
        f"{_BODY}\n"
        f"Generated by `ms-droplet upstream-patch` (ms_droplet {__version__}).\n"
        "---\n"
        + "\n".join(stat_lines)
        + "\n"
        + summary
        + modes
        + "\n"
        + "".join(d[0] for d in diffs)
        + "-- \n"
        + f"ms_droplet {__version__}\n\n"
    )


def write_patch(
    tvm_source: str | os.PathLike, out: str | os.PathLike, *, author: str = _AUTHOR
) -> list[PatchFile]:
    """Generate the patch against ``tvm_source`` and write it to ``out``; return its files."""
    files = generate_files(tvm_source)
    text = render_patch(files, author=author)
    Path(out).write_text(text, encoding="utf-8")
    return files
