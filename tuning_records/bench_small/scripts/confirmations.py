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
"""How the descents' confirmations ended: moves, and challengers rejected at which ratio.

Reads the task logs of every droplet run (``runs/*/droplet*/seed*/logs``) of the bench folders
given and counts, per folder, the moves and the challengers whose confirmation failed on its
own test (not those confirmed but beaten by a faster challenger), binned by the ratio their
confirmation measured (an unbiased estimate: the confirmation is independent of the test that
picked the challenger). A rejected confirmation at 0.87 is a likely real gain that the test
(at ``pvalue`` over the confirmations of the batch) could not tell from the noise:

    python tuning_records/bench_small/scripts/confirmations.py tuning_records/bench_plateau ...
"""

from __future__ import annotations

import glob
import os
import re
import sys

_REJECT = re.compile(
    r"Droplet: (\S+) not confirmed \(ratio ([0-9.]+), p=([0-9.e+-]+)\) \(needed p < ([0-9.e+-]+)\)"
)
_MOVE = re.compile(r"Droplet: move along ")


def main(folders: list[str]) -> None:
    print("| folder | runs | moves | rejected | ratio < 1 | < 0.95 | < 0.95 and p < 0.1 |")
    print("|---|---|---|---|---|---|---|")
    for folder in folders:
        logs = glob.glob(os.path.join(folder, "runs", "*", "droplet*", "seed*", "logs", "*task_0*"))
        moves, rejected = 0, []
        for path in logs:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if _MOVE.search(line):
                        moves += 1
                    m = _REJECT.search(line)
                    if m:
                        rejected.append((float(m.group(2)), float(m.group(3))))
        below1 = sum(r < 1.0 for r, _ in rejected)
        below95 = sum(r < 0.95 for r, _ in rejected)
        strong = sum(r < 0.95 and p < 0.1 for r, p in rejected)
        print(
            f"| {folder} | {len(logs)} | {moves} | {len(rejected)} | {below1} | {below95} "
            f"| {strong} |"
        )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
