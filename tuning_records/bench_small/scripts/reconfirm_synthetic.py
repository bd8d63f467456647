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
"""Moves with and without ``reconfirm`` on synthetic landscapes (the descent alone, no TVM).

A 4-D box (values 0-15), the descent starting at (7, 7, 7, 7) on a flat landscape where value 8
of the first coordinate is GAIN faster; every measurement has 3 % log-normal noise (3 repeats)
and a batch drifts 20 % from its head to its end (the test suite's ``DriftRunner`` with
``ramp``); the descent has spread controls, two challengers, speculation and a (random) ranking,
as the strategy's defaults. For each gain and setting, over SEEDS seeds: the runs whose last
incumbent is the faster value (found), the runs that ended anywhere else but the start (wrong),
and the moves and confirmations made. Run from the repository root:

    python tuning_records/bench_small/scripts/reconfirm_synthetic.py [SEEDS]
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.getcwd())

from tests.test_descent_capabilities import moves_to_the_faster_value


def main(n: int) -> None:
    print(f"{n} seeds each; found / wrong: runs ending on the faster value / elsewhere")
    print("| batch, control_every | gain | reconfirm | found | wrong | moves | confirmations |")
    print("|---|---|---|---|---|---|---|")
    for batch, every in ((32, 8), (12, 4)):
        for gain in (0.0, 0.05, 0.08, 0.12):
            for reconfirm in (False, True):
                c = moves_to_the_faster_value(
                    gain,
                    reconfirm=reconfirm,
                    seeds=range(n),
                    control_every=every,
                    max_batch=batch,
                )
                print(
                    f"| {batch}, {every} | {gain:.2f} | {reconfirm} | {c['found']} | {c['wrong']} "
                    f"| {c['moves']} | {c['confirmations']} |",
                    flush=True,
                )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100)
