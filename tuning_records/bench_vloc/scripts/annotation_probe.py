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
"""Would a root annotation that TVM never samples be a coordinate worth descending along?

Run from the repository root, e.g. ``python tuning_records/bench_vloc/scripts/annotation_probe.py
vectorize matmul:512,512,512 droplet-vloc 0 16,32,64,128,256``. Takes the lowest record of one
run of ``tuning_records/bench_vloc`` (znver4), sets the root block's
``meta_schedule.vectorize`` (the most lanes ``RewriteParallelVectorizeUnroll`` fuses into one
vectorized loop: 64 in every LLVM sketch, no mutator changes it) or
``meta_schedule.unroll_explicit`` (sampled from 0, 16, 64, 512: the probe tries values between
them) to each given value, replays
the trace with the LLVM postprocs and times every kernel, the record's own value twice (the A/A),
in ``--rounds`` rounds of rotating order. Prints each kernel's median and its per-round ratio
to the record's own value (median, 10th-90th percentile), and a short hash of the built module:
kernels with the same hash are the same program. Needs ms_droplet; one CPU-heavy job at a time.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from ms_droplet._candidates import CandidateCache
from ms_droplet._decisions import Change, apply_change
from ms_droplet._evaluate import measure_interleaved
from ms_droplet._records import best_record, find_workload
from ms_droplet._workloads import load_workload
from ms_droplet.bench._layout import open_run_database, run_dir

KEYS = {"vectorize": "meta_schedule.vectorize", "unroll": "meta_schedule.unroll_explicit"}

parser = argparse.ArgumentParser()
parser.add_argument("annotation", choices=sorted(KEYS))
parser.add_argument("workload")
parser.add_argument("strategy")
parser.add_argument("seed", type=int)
parser.add_argument("values")
parser.add_argument("--out", default="tuning_records/bench_vloc")
parser.add_argument("--rounds", type=int, default=12)
args = parser.parse_args()

target = tvm.target.Target(
    json.loads(json.loads(Path(args.out, "bench.json").read_text())["target"])
)
mod = load_workload(args.workload)
db = open_run_database(run_dir(args.out, args.workload, args.strategy, args.seed))
trace = best_record(db, find_workload(db, mod)).trace
cache = CandidateCache(mod=mod, postprocs=ms.postproc.Postproc.create("llvm"), seed=1)

index = next(
    k
    for k, inst in enumerate(trace.insts)
    if inst.kind.name == "Annotate" and str(inst.attrs[0]) == KEYS[args.annotation]
)
if args.annotation == "vectorize":
    own = int(trace.insts[index].inputs[1])
else:  # the value is the result of the sketch's SampleCategorical
    sample = next(i for i in trace.insts if i.kind.name == "SampleCategorical")
    own = int(sample.attrs[0][int(trace.get_decision(sample))])
values = sorted({*(int(v) for v in args.values.split(",")), own})

mods, labels = [], []
for i, value in enumerate([*values, own]):
    sch = cache.replay(apply_change(trace, Change(index, value, annotation=True)))
    if sch is None:
        print(f"{args.annotation}={value}: the replay fails")
        continue
    aa = " (A/A)" if i == len(values) else ""
    labels.append(f"{value} #{tvm_ffi.structural_hash(sch.mod) % 10000:04d}{aa}")
    mods.append(sch.mod)
secs = measure_interleaved(mods, target, rounds=args.rounds)
per_round = [np.array(s).reshape(args.rounds, -1).mean(axis=1) for s in secs]
base = per_round[[lab.split()[0] for lab in labels].index(str(own))]
print(f"{args.workload} {args.strategy} seed {args.seed}: {KEYS[args.annotation]}, own value {own}")
for label, rounds in zip(labels, per_round, strict=True):
    ratio = rounds / base
    lo, hi = np.percentile(ratio, [10, 90])
    print(
        f"  {label:18s} {np.median(rounds) * 1e3:9.4f} ms  / own {np.median(ratio):.3f} "
        f"[{lo:.3f}, {hi:.3f}]"
    )
