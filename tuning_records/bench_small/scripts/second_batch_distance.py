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
"""How far evolution's second batch moved from its first: decisions changed to reach its best.

For every evolutionary run of a bench folder, the fastest record of trials 33-64 (the second
batch of 32) is compared with the records of trials 1-32: the same sketch (the instructions
before the postprocessors) and how many sampling decisions and parallel annotations differ from
the nearest first-batch record of that sketch. A descent changes one decision per move; a
second-batch best that is 3-5 decisions away from every first-batch record is out of reach of
one descent batch. Tuning-time latencies (one runner slot each, not re-measured): only a rough
guide to the gains. Reads the JSON records without TVM:

    python tuning_records/bench_small/scripts/second_batch_distance.py [bench_dir] [batch]
"""

import sys
from pathlib import Path

from _trace_records import distance, records

root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
batch = int(sys.argv[2]) if len(sys.argv) > 2 else 32


print(
    "| run | first batch best (ms) | second batch best (ms) | ratio | nearest first-batch record |"
)
print("|---|---|---|---|---|")
dists = []
for db in sorted(root.glob("runs/*/evolutionary/seed*/database_tuning_record.json")):
    recs = records(db)
    if len(recs) < 2 * batch:
        continue
    first, second = recs[:batch], recs[batch : 2 * batch]
    best1 = min(first, key=lambda r: r[0])
    best2 = min(second, key=lambda r: r[0])
    same = [distance(best2[2], r[2]) for r in first if r[1] == best2[1]]
    near = min(same) if same else None
    if near is not None:
        dists.append(near)
    run = f"{db.parts[-4]} {db.parts[-2]}"
    print(
        f"| {run} | {1e3 * best1[0]:.4f} | {1e3 * best2[0]:.4f} | {best2[0] / best1[0]:.3f} | "
        f"{'another sketch' if near is None else f'{near} decision(s) away'} |"
    )
if dists:
    dists.sort()
    print(f"\nnearest distance: median {dists[len(dists) // 2]}, range {dists[0]}-{dists[-1]}")
