import sys, time, numpy as np, tvm
sys.path.insert(0, ".devcarry_p2")
from common import make_target, dev_of
from ms_droplet._workloads import load_workload
kind = sys.argv[1]
print("tvm", tvm.__version__, "| tvm_ffi", __import__("tvm_ffi").__version__)
print("cuda exist:", tvm.cuda(0).exist, tvm.cuda(0).device_name if tvm.cuda(0).exist else "",
      "compute_version", tvm.cuda(0).compute_version if tvm.cuda(0).exist else "")
try:
    print("Target.from_device:", tvm.target.Target.from_device(tvm.cuda(0)))
except Exception as e:
    print("from_device failed:", repr(e))
target = make_target(kind)
n = 256
mod = load_workload(f"matmul:{n},{n},{n}")
sch = tvm.s_tir.Schedule(mod)
blk = sch.get_sblock("C")
i, j, k = sch.get_loops(blk)
if kind != "llvm":
    io, ii = sch.split(i, [None, 16]); jo, ji = sch.split(j, [None, 16])
    sch.reorder(io, jo, ii, ji)
    sch.bind(sch.fuse(io, jo), "blockIdx.x"); sch.bind(sch.fuse(ii, ji), "threadIdx.x")
t0 = time.time()
lib = tvm.compile(sch.mod, target=target)
print("hand-scheduled build %.1fs" % (time.time() - t0))
if kind != "llvm":
    print("CUDA source head:\n", lib.mod.imports[0].inspect_source()[:800])
dev = dev_of(kind)
a = np.random.rand(n, n).astype("float32"); b = np.random.rand(n, n).astype("float32")
ta, tb = tvm.runtime.tensor(a, device=dev), tvm.runtime.tensor(b, device=dev)
tc = tvm.runtime.tensor(np.zeros((n, n), "float32"), device=dev)
lib["main"](ta, tb, tc)
print("hand-scheduled max abs err:", np.abs(tc.numpy() - a @ b).max(), "allclose:", np.allclose(tc.numpy(), a @ b, rtol=1e-4, atol=1e-3))
