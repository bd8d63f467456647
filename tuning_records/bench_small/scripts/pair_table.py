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
"""A markdown table of several paired comparisons, one row per (workload, seed) pair.

Run from the repository root, e.g. ``python tuning_records/bench_small/scripts/pair_table.py
tuning_records/bench_small droplet-pool droplet-scout droplet-pool evolutionary@B`` (pairs of
kernel names; needs scipy and ms_droplet). Each cell is the paired per-round ratio of the
pair's latest re-measurement; the last row is the geometric mean over the pairs with its
Student-t interval, how many pairs are below 1 and how many at or below 0.95. With ``--ci``
(first argument) each cell also shows the pair's 95 % CI over its rounds.
"""

import json
import sys
from pathlib import Path

from ms_droplet._intervals import geomean_interval, paired_ratio

args = sys.argv[1:]
with_ci = bool(args) and args[0] == "--ci"
if with_ci:
    args.pop(0)
root = Path(args.pop(0)) if args and Path(args[0]).is_dir() else Path(__file__).parents[1]
comparisons = list(zip(args[::2], args[1::2], strict=True))
print("| workload | seed | " + " | ".join(f"{a} / {b}" for a, b in comparisons) + " |")
print("|---|---|" + "---|" * len(comparisons))
columns: list[list[float]] = [[] for _ in comparisons]
for path in sorted((root / "remeasure").glob("*/seed*.json")):
    data = json.loads(path.read_text())
    samples = data["samples"]
    if not all(a in samples and b in samples for a, b in comparisons):
        continue
    cells = []
    for col, (a, b) in zip(columns, comparisons, strict=True):
        r = paired_ratio(samples[a], samples[b], data["rounds"])
        col.append(r["ratio"])
        ci = f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if with_ci else ""
        cells.append(f"{r['ratio']:.3f}{ci}")
    print(f"| `{path.parent.name}` | {path.stem[4:]} | " + " | ".join(cells) + " |")
cells = []
for col in columns:
    if len(col) < 2:
        cells.append("-")
        continue
    g = geomean_interval(col)
    cells.append(
        f"**{g['geomean']:.3f}** ({g['ci'][0]:.3f}-{g['ci'][1]:.3f}; < 1 in {g['below_one']}, "
        f"≤ 0.95 in {sum(x <= 0.95 for x in col)})"
    )
print(f"| **geometric mean** ({len(columns[0]) if columns else 0}) | | " + " | ".join(cells) + " |")
