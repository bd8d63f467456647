import sys, os, time, glob, collections, numpy as np, tvm
sys.path.insert(0, ".devcarry_p2")
from common import make_target, dev_of
from tvm.s_tir import meta_schedule as ms
import ms_droplet
from ms_droplet._workloads import load_workload
from ms_droplet._decisions import moves

kind, bkind, n, trials, wd = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
target = make_target(kind)
mod = load_workload(f"matmul:{n},{n},{n}")
builder = ms_droplet.WarmBuilder() if bkind == "warm" else (ms.builder.LocalBuilder(timeout_sec=120) if bkind == "local120" else ms.builder.LocalBuilder())
t0 = time.time()
db = ms.tune_tir(mod, target, wd, max_trials_global=trials, num_trials_per_iter=16,
                 strategy=ms_droplet.DropletStrategy(num_evolutionary_trials=16),
                 builder=builder, runner=ms.runner.LocalRunner(),
                 cost_model=ms.cost_model.RandomModel(seed=0), seed=0)
print(f"TUNE {bkind}: wall {time.time() - t0:.1f}s")
if bkind == "warm":
    builder.shutdown()
print("TUNE DONE")
