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
"""The figures behind the small-budget test of session 27 (no timing, seconds to run).

1. On the recorded A/A batches: how much the slots' mean log run seconds scatter (around a
   line over the 32 slots) against their repeats' variance over their number, and against
   one repeat's variance.
2. On synthetic landscapes (the test suite's ``_greedy``: batches of 8, immediate moves, a
   slot noise as large as the repeats' scatter): false moves on a flat landscape and the steps
   left on a bowl, for the first small-budget layout (one head control, per-sample test) and
   today's (head and last controls, the pooled slot test).

    python tuning_records/noise_check/small_layout.py tuning_records/noise_check/aa_*_znver4.json
"""

import json
import math
import statistics as st
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests._descent_helpers import OPT, bowl, flat, l1
from tests.test_descent_capabilities import _greedy

LAYOUTS = {
    "one head control, per-sample test": {},
    "head and last controls, pooled slot test (today)": {"tail_control": True, "slot_unit": True},
}


def slot_scatter(path: str) -> None:
    data = json.loads(Path(path).read_text())
    batches = [b for b in data["batches"] if all(s is not None for s in b)]
    over_mean, over_repeat = [], []
    for b in batches:
        logs = [[math.log(x) for x in s] for s in b]
        within = st.mean(st.variance(x) for x in logs)
        means = [st.mean(x) for x in logs]
        xs = list(range(len(means)))
        xbar, ybar = st.mean(xs), st.mean(means)
        slope = sum((x - xbar) * (y - ybar) for x, y in zip(xs, means, strict=True)) / sum(
            (x - xbar) ** 2 for x in xs
        )
        resid = [y - (ybar + slope * (x - xbar)) for x, y in zip(xs, means, strict=True)]
        between = sum(r * r for r in resid) / (len(means) - 2)
        over_mean.append(between / (within / len(logs[0])))
        over_repeat.append(between / within)
    q = [round(v, 1) for v in st.quantiles(over_mean, n=10)]
    print(f"{Path(path).name}: slot-mean variance / (repeat variance / n), deciles {q}")
    print(
        f"  median {st.median(over_mean):.1f}; slot-mean variance / repeat variance: median "
        f"{st.median(over_repeat):.2f}"
    )


def synthetic() -> None:
    for name, kw in LAYOUTS.items():
        moves = batches = 0
        for seed in range(40):
            d, n = _greedy(flat, (7, 7, 7, 7), seed=seed, sigma_slot=0.03, **kw)
            moves, batches = moves + len(d.moves), batches + n
        left = [
            l1(
                _greedy(bowl(OPT), (6, 2, 14, 9), seed=s, batches=40, sigma_slot=0.03, **kw)[
                    0
                ].incumbent.point,
                OPT,
            )
            for s in range(12)
        ]
        print(
            f"{name}: flat, false moves {moves} in {batches} batches ({moves / batches:.3f}); "
            f"bowl from 10 steps away, steps left over 12 runs {sum(left)} {left}"
        )


if __name__ == "__main__":
    for path in sys.argv[1:]:
        slot_scatter(path)
    synthetic()
