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

Run from the repository root: ``python tuning_records/bench_small/scripts/first32.py
[BENCH_DIR]`` (needs scipy; default: tuning_records/bench_small). Reads each run's
``trials.jsonl`` (latencies recorded while tuning); every seed with both runs finished.
"""

import json
import sys
from pathlib import Path

from _geomean import geomean_line

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"


def best_of_first(path: Path, n: int = 32) -> float:
    trials = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return min(t["ms"] for t in trials[:n] if t["ms"])


ratios = []
for workload in sorted(RUNS.iterdir()):
    for run in sorted((workload / "droplet").glob("seed*/result.json")):
        seed = run.parent.name
        evo = workload / "evolutionary" / seed / "result.json"
        if not evo.exists():
            continue
        d = best_of_first(run.parent / "trials.jsonl")
        e = best_of_first(evo.parent / "trials.jsonl")
        ratios.append(d / e)
        print(f"{workload.name} {seed}: {d / e:.3f}")
print(geomean_line(ratios))
