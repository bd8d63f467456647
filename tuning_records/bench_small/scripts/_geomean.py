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
"""The geometric mean of ratios over (workload, seed) pairs, with a Student-t interval."""

import math
import statistics

from scipy import stats


def geomean_line(ratios: list[float]) -> str:
    """``geometric mean G [lo, hi], p=P, n=N, below 1 in K``: 95 % t-interval over the logs."""
    logs = [math.log(x) for x in ratios]
    if len(logs) < 2:
        return f"n={len(logs)}: no interval over pairs yet"
    mean = statistics.mean(logs)
    se = statistics.stdev(logs) / len(logs) ** 0.5
    t = stats.t.ppf(0.975, len(logs) - 1)
    return (
        f"geometric mean {math.exp(mean):.3f} [{math.exp(mean - t * se):.3f}, "
        f"{math.exp(mean + t * se):.3f}], p={stats.ttest_1samp(logs, 0).pvalue:.2f}, "
        f"n={len(logs)}, below 1 in {sum(x < 1 for x in ratios)}"
    )
