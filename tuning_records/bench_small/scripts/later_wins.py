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
"""Where evolution's later wins lie: how far from the explored best, how far from its runners-up.

For every evolutionary run of a bench folder, the records of trials N+1 to N+SPAN that are at
least 2 % faster than the best of the first N trials (the exploration a droplet run of the same
budget would have made: N=200 on the plateau) are compared with those first N records: how many
sampling decisions and parallel annotations separate the fastest of them from the explored best
(a descent from that best reaches one changed decision per move), and from the nearest explored
record of its sketch, with that record's rank among the first N by recorded latency (1 = the
best). A later win two decisions from the 5th best explored record and four from the best is
what evolution (mutations of many measured parents, picked by the cost model) reaches and a
descent from the best does not. Tuning-time latencies (one runner slot each, not re-measured):
only a rough guide to the gains. Reads the JSON records without TVM:

    python tuning_records/bench_small/scripts/later_wins.py BENCH_DIR [N] [SPAN]
"""

import sys
from pathlib import Path

from _trace_records import distance, records

root = Path(sys.argv[1])
explored = int(sys.argv[2]) if len(sys.argv) > 2 else 200
span = int(sys.argv[3]) if len(sys.argv) > 3 else 1000

print(
    f"| run | best of trials 1-{explored} (ms) | later records >= 2 % faster | fastest of them "
    "(ms, ratio) | decisions from the explored best | nearest explored record: decisions, "
    "its rank |"
)
print("|---|---|---|---|---|---|")
for db in sorted(root.glob("runs/*/evolutionary/seed*/database_tuning_record.json")):
    recs = records(db)
    if len(recs) <= explored:
        continue
    first, later = recs[:explored], recs[explored : explored + span]
    ranked = sorted(first, key=lambda r: r[0])
    best = ranked[0]
    wins = [r for r in later if r[0] < 0.98 * best[0]]
    run = f"{db.parts[-4]} {db.parts[-2]}"
    if not wins:
        print(f"| {run} | {1e3 * best[0]:.4f} | 0 | | | |")
        continue
    win = min(wins, key=lambda r: r[0])
    from_best = str(distance(win[2], best[2])) if win[1] == best[1] else "another sketch"
    same = [(distance(win[2], r[2]), rank) for rank, r in enumerate(ranked, 1) if r[1] == win[1]]
    if same:
        near = min(d for d, _ in same)
        ranks = ", ".join(str(rank) for d, rank in same if d == near)
        nearest = f"{near}, rank {ranks}"
    else:
        nearest = "no explored record of its sketch"
    print(
        f"| {run} | {1e3 * best[0]:.4f} | {len(wins)} | {1e3 * win[0]:.4f}, "
        f"{win[0] / best[0]:.3f} | {from_best} | {nearest} |"
    )
