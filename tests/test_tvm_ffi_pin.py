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
"""Regression test for the apache-tvm-ffi pin (0.1.15.x segfaults in tvm.ir.save_json).

MetaSchedule's JSON database and its mutators serialize workloads with ``tvm.ir.save_json``; this
runs it in a subprocess so that a crash fails this test instead of killing pytest.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent(
    """
    import tempfile
    import tvm
    from tvm import te
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.testing import te_workload

    mod = tvm.IRModule({"main": te.create_prim_func(te_workload.matmul(128, 128, 128))})
    text = tvm.ir.save_json(mod)
    tvm.ir.assert_structural_equal(tvm.ir.load_json(text), mod)
    with tempfile.TemporaryDirectory() as d:
        db = ms.database.JSONDatabase(work_dir=d)
        wl = db.commit_workload(mod)
        db2 = ms.database.JSONDatabase(work_dir=d)
        assert db2.has_workload(mod)
    print("OK")
    """
)


def test_save_json_of_te_matmul_workload_does_not_crash():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.strip().endswith("OK")
