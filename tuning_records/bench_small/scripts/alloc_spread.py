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
"""Time a pair's kernels again in this process, each under several argument allocations.

Run from the repository root, e.g. ``python tuning_records/bench_small/scripts/alloc_spread.py
tuning_records/bench_plateau matmul:512,512,512 0 droplet droplet-split8 evolutionary``: builds
each strategy's kernel of the (workload, seed) pair as the bench's re-measurement does (droplet's
pick, else the lowest record), allocates its arguments ``--allocs`` times and times every
(kernel, allocation) in ``--rounds`` rounds of rotating order. Prints each kernel's median per
allocation: the spread over allocations, and (against the bench's re-measurement) how far a
kernel moves between processes. Needs ms_droplet; one CPU-heavy job at a time.
"""

import argparse
import statistics

import tvm
from tvm.s_tir.meta_schedule.arg_info import ArgInfo
from tvm.s_tir.meta_schedule.runner import local_runner

from ms_droplet._evaluate import interleaved_order
from ms_droplet._picks import picked_record
from ms_droplet._records import best_record, find_workload, scheduled_module
from ms_droplet._workloads import load_workload
from ms_droplet.bench._layout import open_run_database, run_dir

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("workload")
parser.add_argument("seed", type=int)
parser.add_argument("strategies", nargs="+")
parser.add_argument("--allocs", type=int, default=5)
parser.add_argument("--rounds", type=int, default=5)
args = parser.parse_args()
mod = load_workload(args.workload)
cpu = tvm.target.codegen.llvm_get_system_cpu()
target = tvm.target.Target({"kind": "llvm", "mcpu": cpu, "num-cores": 2})
dev = tvm.cpu(0)
timers, names = [], []
for strategy in args.strategies:
    work_dir = run_dir(args.out, args.workload, strategy, args.seed)
    db = open_run_database(work_dir)
    wl = find_workload(db, mod)
    rec = picked_record(work_dir, wl.mod) or best_record(db, wl)
    kernel = scheduled_module(mod, rec.trace)
    lib = tvm.compile(kernel, target=target).jit()
    info = [a.as_json() for a in ArgInfo.from_entry_func(kernel, remove_preproc=True)]
    f = lib.time_evaluator(lib.entry_name, dev, number=3, repeat=3, min_repeat_ms=100)
    for k in range(args.allocs):
        tensors = local_runner.default_alloc_argument(dev, info, 1)[0]
        timers.append(lambda f=f, tensors=tensors: f(*tensors).results)
        names.append(strategy)
results: list[list[float]] = [[] for _ in timers]
for r in range(args.rounds):
    for i in interleaved_order(len(timers), r):
        results[i].extend(timers[i]())
for strategy in args.strategies:
    meds = [1e3 * statistics.median(results[i]) for i, n in enumerate(names) if n == strategy]
    print(
        f"{strategy:18s} median ms per allocation: " + " ".join(f"{m:.3f}" for m in meds),
        f"| max/min {max(meds) / min(meds):.3f}",
    )
