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
"""Best recorded latency of the first 32 trials, droplet run over evolutionary run, per pair.

Run from the repository root: ``python tuning_records/bench_small/scripts/first32.py``
(needs scipy). Reads each run's ``trials.jsonl`` (latencies recorded while tuning).
"""

import json
from pathlib import Path

from _geomean import geomean_line

RUNS = Path(__file__).resolve().parents[1] / "runs"


def best_of_first(path: Path, n: int = 32) -> float:
    trials = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return min(t["ms"] for t in trials[:n] if t["ms"])


ratios = []
for workload in sorted(RUNS.iterdir()):
    for seed in (0, 1, 2):
        d = best_of_first(workload / "droplet" / f"seed{seed}" / "trials.jsonl")
        e = best_of_first(workload / "evolutionary" / f"seed{seed}" / "trials.jsonl")
        ratios.append(d / e)
        print(f"{workload.name} seed {seed}: {d / e:.3f}")
print(geomean_line(ratios))
