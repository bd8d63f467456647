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
"""The edits of existing TVM files: ``"droplet"`` in ``SearchStrategy.create`` and the export.

Each edit is idempotent (an already patched file is returned unchanged) and fails with an
:class:`UpstreamError` naming the file when the text it anchors on is not found.
"""

from __future__ import annotations

import re

from ._tree import SS_DIR, UpstreamError

__all__ = ["patch_init", "patch_search_strategy"]


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


def patch_search_strategy(text: str) -> str:
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


def patch_init(text: str) -> str:
    line = "from .droplet import DropletStrategy\n"
    if line in text:
        return text
    anchor = "from .evolutionary_search import EvolutionarySearch\n"
    if anchor not in text:
        raise UpstreamError(f"{SS_DIR}/__init__.py: {anchor.strip()!r} not found")
    return text.replace(anchor, line + anchor)
