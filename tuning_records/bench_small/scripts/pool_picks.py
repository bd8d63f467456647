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
"""What the booster's exploration picks gave in a ``droplet-<variant>`` run with ``explore_pool``.

At B=64 such a run copies droplet's 32 explored records, then measures one scout batch: first
the side EvolutionarySearch's candidates the cost model kept (``share`` of them), then the
incumbent's neighbours; then the final batch. Per run: the tuning-time best (ms, one runner slot
each, not re-measured) of the explored records, of the kept exploration candidates and of the
neighbours, the kept candidates' distance (decisions) from the incumbent, and whether the
final pick is a kept candidate or a neighbour. Reads the JSON records without TVM:

    python tuning_records/bench_small/scripts/pool_picks.py [bench_dir] [variant] [share]
"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
variant = sys.argv[2] if len(sys.argv) > 2 else "droplet-pool"
share = int(sys.argv[3]) if len(sys.argv) > 3 else 8
explored = 32


def decisions(trace: list) -> dict:
    """The sampling decisions and parallel annotations of a JSON trace, by instruction."""
    insts, decs = trace
    cut = next((k for k, i in enumerate(insts) if i[0] == "EnterPostproc"), len(insts))
    values = {k: json.dumps(v) for k, v in decs}
    for k, inst in enumerate(insts[:cut]):
        if inst[0] == "Annotate" and inst[2] == ["meta_schedule.parallel"]:
            values[f"parallel@{k}"] = str(inst[1][1])
    return values


def distance(a: dict, b: dict) -> int:
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))


def mean(secs: list) -> float:
    ok = [s for s in (secs or []) if s < 1e9]
    return sum(ok) / len(ok) if ok else float("inf")


print(
    "| run | explored best (ms) | kept exploration best (ms) | neighbours best (ms) | "
    "kept candidates' distance | final pick |"
)
print("|---|---|---|---|---|---|")
counts = {"kept exploration": 0, "neighbour": 0, "explored": 0, "?": 0}
for db in sorted(root.glob(f"runs/*/{variant}/seed*/database_tuning_record.json")):
    recs = []
    for line in db.read_text().splitlines():
        _, (trace, secs, *_) = json.loads(line)
        recs.append((mean(secs), decisions(trace)))
    if len(recs) < explored + share:
        continue
    first = recs[:explored]
    inc = min(first, key=lambda r: r[0])
    kept = recs[explored : explored + share]
    scout_end = explored + 24
    nbrs = recs[explored + share : scout_end]
    picks = json.loads((db.parent / "droplet_picks.json").read_text())["picks"]
    pick = decisions(picks[0]["record"][0]) if picks else None
    where = "?"
    if pick is not None:
        if any(distance(pick, r[1]) == 0 for r in kept):
            where = "kept exploration"
        elif any(distance(pick, r[1]) == 0 for r in nbrs):
            where = "neighbour"
        elif any(distance(pick, r[1]) == 0 for r in first):
            where = "explored"
    counts[where] += 1
    dists = sorted(distance(r[1], inc[1]) for r in kept)
    best_nbr = min((r[0] for r in nbrs), default=float("inf"))
    print(
        f"| {db.parts[-4]} {db.parts[-2]} | {1e3 * inc[0]:.4f} | "
        f"{1e3 * min(r[0] for r in kept):.4f} | {1e3 * best_nbr:.4f} | "
        f"{dists[0]}-{dists[-1]} | {where} |"
    )
print("\nfinal picks: " + ", ".join(f"{k} {v}" for k, v in counts.items() if v))
