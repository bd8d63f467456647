import tvm

def make_target(kind):
    if kind == "llvm":
        return tvm.target.Target({"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2})
    cfg = {"kind": "cuda", "arch": "sm_90", "max_threads_per_block": 1024,
           "max_shared_memory_per_block": 49152, "thread_warp_size": 32,
           "registers_per_block": 65536,
           "host": {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 16}}
    try:
        t = tvm.target.Target(cfg)
    except Exception as e:  # record what TVM wants and retry without the optional keys
        print("TARGET dict with host failed:", repr(e))
        cfg.pop("registers_per_block")
        t = tvm.target.Target(cfg)
    print("TARGET:", t, "| host:", t.host)
    return t

def dev_of(kind):
    return tvm.cpu(0) if kind == "llvm" else tvm.cuda(0)
