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
"""Geometric means over all pairs of the latest re-measurement's paired per-round ratios.

Run from the repository root, e.g. ``python tuning_records/bench_small/scripts/pair_means.py
droplet-xrank droplet-scout droplet-scout evolutionary@B`` (pairs of kernel names; needs scipy
and ms_droplet); a bench folder as the first argument reads that one instead of bench_small.
Prints each pair's ratio and the geometric mean with a Student-t interval over the (workload,
seed) pairs.
"""

import json
import sys
from pathlib import Path

from _geomean import geomean_line

from ms_droplet._intervals import paired_ratio

REMEASURE = Path(__file__).resolve().parents[1] / "remeasure"

args = sys.argv[1:]
if args and Path(args[0]).is_dir():
    REMEASURE = Path(args.pop(0)) / "remeasure"
names = args or ["droplet (A/A)", "droplet"]
comparisons = list(zip(names[::2], names[1::2], strict=True))
for a, b in comparisons:
    ratios = []
    for path in sorted(REMEASURE.glob("*/seed*.json")):
        data = json.loads(path.read_text())
        samples = data["samples"]
        if a in samples and b in samples:
            r = paired_ratio(samples[a], samples[b], data["rounds"])
            ratios.append(r["ratio"])
            print(f"{path.parent.name} {path.stem}: {a} / {b} {r['ratio']:.3f} {r['ci95']}")
    print(f"{a} / {b}: {geomean_line(ratios)}, <= 0.95 in {sum(x <= 0.95 for x in ratios)}")
