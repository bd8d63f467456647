import sys, os, time, glob, collections, traceback, numpy as np, tvm
sys.path.insert(0, ".devcarry_p2")
from common import make_target, dev_of
from tvm.s_tir import meta_schedule as ms
import ms_droplet
from ms_droplet._workloads import load_workload
from ms_droplet._decisions import moves
kind, n, wd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
target = make_target(kind)
mod = load_workload(f"matmul:{n},{n},{n}")
db = ms.database.JSONDatabase(work_dir=wd)
recs = db.get_all_tuning_records()
ok = [r for r in recs if r.run_secs and min(float(x) for x in r.run_secs) < 1e9]
print(f"records: {len(recs)}, ran ok: {len(ok)}")
best = min(ok, key=lambda r: np.mean([float(x) for x in r.run_secs]))
print("best mean run_secs (ms): %.4f" % (1e3 * np.mean([float(x) for x in best.run_secs])))
tr = best.trace
print("best trace instruction kinds:", dict(collections.Counter(i.kind.name for i in tr.insts)))
print("sampling decisions in best trace:")
for k, inst in enumerate(tr.insts):
    d = tr.get_decision(inst)
    if d is not None:
        print(f"  #{k} {inst.kind.name} attrs={[str(a) for a in inst.attrs]} decision={d}")
for k, inst in enumerate(tr.insts):
    if inst.kind.name in ("Annotate", "Bind", "Split"):
        print(f"  #{k} {inst.kind.name} attrs={[str(a) for a in inst.attrs]} inputs={[str(x)[:40] for x in inst.inputs]}")
for step in (1, 2):
    ms_ = moves(tr, step, max_parallel_extent=16 * 16)
    print(f"descent coordinates at step {step}:", dict(collections.Counter(m.label.split('#')[0] for m in ms_)),
          [m.label for m in ms_][:40])
print("best trace:\n" + str(tr))
for f in glob.glob(os.path.join(wd, "logs", "*.log")):
    lines = [l.rstrip() for l in open(f) if "Droplet" in l]
    print(f"== {f}: {len(lines)} Droplet lines")
    for l in lines:
        print("   ", l[:300])
try:
  sch = ms.tir_integration.compile_tir(db, mod, target)
  lib = tvm.compile(sch.mod, target=target)
  dev = dev_of(kind)
  a = np.random.rand(n, n).astype("float32"); b = np.random.rand(n, n).astype("float32")
  ta, tb = tvm.runtime.tensor(a, device=dev), tvm.runtime.tensor(b, device=dev)
  tc = tvm.runtime.tensor(np.zeros((n, n), "float32"), device=dev)
  lib["main"](ta, tb, tc)
  ref = a.astype("float64") @ b.astype("float64")
  print("compile_tir kernel: max abs err %.3g, allclose(rtol=1e-4, atol=1e-3): %s" % (np.abs(tc.numpy() - ref).max(), np.allclose(tc.numpy(), ref, rtol=1e-4, atol=1e-3)))
  ev = lib.mod.time_evaluator("main", dev, number=20, repeat=5)(ta, tb, tc)
  print("compile_tir kernel time_evaluator mean %.4f ms, results %s" % (ev.mean * 1e3, [round(x * 1e3, 4) for x in ev.results]))
  if kind != "llvm":
      src = lib.mod.imports[0].inspect_source()
      print("CUDA source head:\n" + src[:2500])

except Exception:
  traceback.print_exc()
