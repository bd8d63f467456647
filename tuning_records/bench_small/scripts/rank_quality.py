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
"""How well would TVM's XGBModel, trained on a run's explored records, rank its descent's neighbours?

Offline, from recorded runs (no timing): for each ``runs/<workload>/<RUN>/seed<S>`` of a bench
folder, an ``XGBModel`` is trained on the records measured before the descent started (the
explored ones) and scores the neighbours the descent then measured (each distinct kernel once,
in the order measured; controls, confirmations and final-batch repeats left out). Printed per
run: Spearman's rank correlation of score and speed, and how fast the best of the model's top
``k`` is against the best of ``k`` picked at random (expected value), both relative to the
fastest neighbour. Run from the repository root, e.g. ``python
tuning_records/bench_small/scripts/rank_quality.py tuning_records/bench_small droplet-scout 8``
(needs scipy). Two more arguments N M train on the first N records of any run (e.g. an
evolutionary one, which has no descent) and score its records N+1..M instead, e.g. ``...
tuning_records/bench_small evolutionary 8 32 64``: would the model trained on the first batch
have ranked evolution's second batch?
"""

import math
import re
import sys
from pathlib import Path

import numpy as np
from _geomean import geomean_line
from scipy.stats import spearmanr
from tvm.s_tir import Schedule
from tvm.s_tir import meta_schedule as ms

from ms_droplet._candidates import measure_candidate
from ms_droplet._decisions import trace_key
from ms_droplet._records import first_records, is_failure, latency


def explored_count(run_dir: Path) -> int:
    log = "".join(p.read_text() for p in (run_dir / "logs").glob("*main*.log"))
    found = re.search(r"(\d+) record\(s\) of this workload already in the database count", log)
    if found:
        return int(found.group(1))
    found = re.search(r"descent 1 starts after (\d+) trial", log)
    return int(found.group(1))


def expected_best_of_random(lat: list[float], k: int) -> float:
    """E[min of a uniformly random k-subset]: order statistics of the sorted latencies."""
    s, n = sorted(lat), len(lat)
    return sum(s[i] * math.comb(n - 1 - i, k - 1) for i in range(n)) / math.comb(n, k)


def evaluate(run_dir: Path, k: int, train_n: int | None = None, upto: int | None = None):
    db = ms.database.JSONDatabase(work_dir=str(run_dir))
    wl = db.get_all_tuning_records()[0].workload
    records = first_records(str(run_dir), wl, 10**6)
    n = explored_count(run_dir) if train_n is None else train_n
    train, rest = records[:n], records[n:upto]
    seen = {trace_key(r.trace) for r in train}
    evals = []
    for r in rest:
        key = trace_key(r.trace)
        if key not in seen and not is_failure(r):
            evals.append(r)
        seen.add(key)
    target = records[0].target
    ctx = ms.TuneContext(mod=wl.mod, target=target, task_name="rank", rand_state=1, num_threads=1)

    def cand(r):
        sch = Schedule(wl.mod)
        r.trace.apply_to_schedule(sch, remove_postproc=False)
        return measure_candidate(sch)

    ok = [r for r in train if not is_failure(r)]
    model = ms.cost_model.XGBModel(num_warmup_samples=0, num_tuning_cores=1)
    model.update(
        ctx,
        [cand(r) for r in ok],
        [ms.runner.RunnerResult(run_secs=r.run_secs, error_msg=None) for r in ok],
    )
    scores = np.asarray(model.predict(ctx, [cand(r) for r in evals]))
    lat = [latency(r.run_secs) for r in evals]
    rho = spearmanr(scores, [-x for x in lat]).statistic
    top = np.argsort(-scores)[:k]
    best = min(lat)
    return n, len(evals), rho, min(lat[i] for i in top) / best, expected_best_of_random(lat, k) / best


def main() -> None:
    bench, run, k = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    train_n, upto = (int(sys.argv[4]), int(sys.argv[5])) if len(sys.argv) > 5 else (None, None)
    rhos, model_r, random_r = [], [], []
    for run_dir in sorted(bench.glob(f"runs/*/{run}/seed*")):
        n, m, rho, mr, rr = evaluate(run_dir, k, train_n, upto)
        rhos.append(rho)
        model_r.append(mr)
        random_r.append(rr)
        print(
            f"{run_dir.parent.parent.name} {run_dir.name}: trained on {n}, {m} neighbours, "
            f"Spearman {rho:+.2f}, best of top-{k} / best {mr:.3f} (random {k}: {rr:.3f})"
        )
    print(f"mean Spearman {np.mean(rhos):+.3f} over {len(rhos)} runs, positive in "
          f"{sum(r > 0 for r in rhos)}")
    print("best of model's top-k / best of random k:", geomean_line(
        [a / b for a, b in zip(model_r, random_r)]))


if __name__ == "__main__":
    main()
