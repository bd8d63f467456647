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
"""The geometric mean of ratios over (workload, seed) pairs, with a Student-t interval.

One line of ``ms_droplet._intervals.geomean_interval`` (what ``ms-droplet report`` shows).
"""

from ms_droplet._intervals import geomean_interval


def geomean_line(ratios: list[float]) -> str:
    """``geometric mean G [lo, hi], p=P, n=N, below 1 in K``: 95 % t-interval over the logs."""
    if len(ratios) < 2:
        return f"n={len(ratios)}: no interval over pairs yet"
    g = geomean_interval(ratios)
    p = "-" if g["p"] is None else f"{g['p']:.2f}"
    return (
        f"geometric mean {g['geomean']:.3f} [{g['ci'][0]:.3f}, {g['ci'][1]:.3f}], p={p}, "
        f"n={g['pairs']}, below 1 in {g['below_one']}"
    )
