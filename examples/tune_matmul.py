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
"""Tune a matmul with droplet from Python (the API behind ``ms-droplet tune``).

Run: ``python examples/tune_matmul.py [WORK_DIR]``.
"""

import sys
import tempfile

import tvm
from tvm import te
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.testing import te_workload

import ms_droplet  # registers strategy="droplet"


def main() -> None:
    work_dir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="ms_droplet_")
    mod = te.create_prim_func(te_workload.matmul(256, 256, 256))
    target = tvm.target.Target(
        {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2}
    )
    builder = ms_droplet.WarmBuilder(timeout_sec=60)
    try:
        db = ms.tune_tir(
            mod,
            target,
            work_dir,
            max_trials_global=160,
            num_trials_per_iter=32,
            strategy=ms_droplet.DropletStrategy(num_evolutionary_trials=64, pvalue=0.05),
            builder=builder,
            seed=0,
        )
    finally:
        builder.shutdown()
    sch = ms.tir_integration.compile_tir(db, mod, target)
    print(f"best schedule found; records in {work_dir}")
    print(sch.mod.script())


if __name__ == "__main__":
    main()
