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
"""The records of a bench run's JSON database as plain values, for the analysis scripts.

Reads ``database_tuning_record.json`` without TVM: each record's mean latency, its sketch (the
instructions before the postprocessors) and its sampling decisions and parallel annotations.
"""

import json
from pathlib import Path


def records(path: Path) -> list[tuple[float, str, dict]]:
    """(mean seconds, sketch, decisions) of every record, in the order they were committed."""
    out = []
    for line in path.read_text().splitlines():
        _, (trace, secs, *_) = json.loads(line)
        insts, decisions = trace
        cut = next((k for k, i in enumerate(insts) if i[0] == "EnterPostproc"), len(insts))
        sketch = json.dumps([(i[0], i[2]) for i in insts[:cut]])
        values = {k: json.dumps(v) for k, v in decisions}
        for k, inst in enumerate(insts[:cut]):
            if inst[0] == "Annotate" and inst[2] == ["meta_schedule.parallel"]:
                values[f"parallel@{k}"] = str(inst[1][1])
        ok = [s for s in (secs or []) if s < 1e9]
        out.append((sum(ok) / len(ok) if ok else float("inf"), sketch, values))
    return out


def distance(a: dict, b: dict) -> int:
    """How many decisions and parallel annotations differ between two records of one sketch."""
    return sum(a.get(k) != b.get(k) for k in set(a) | set(b))
