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
"""Fault injection with real builds and runs: kill a tuning at several points, resume each time.

One subprocess imports TVM once (the tensor intrinsics cost ~30-50 s here) and forks one child
per attempt. Each child tunes ``matmul:16,16,16`` into the same work dir with real builds (TVM's
``default_build``/``default_export``, the LLVM build ``LocalBuilder``'s workers run, done in the
child itself so that no attempt pays a builder worker's import of the tensor intrinsics; the
``WarmBuilder``'s workers and their deaths are ``test_warm_builder``'s subject) and the real
``LocalRunner``, and SIGKILLs its whole process group (the runner's worker with it) at a planned
point:

1. during the exploration (while its second batch is being built),
2. during the descent (while a descent batch is being built),
3. between the measurement and the commit of a batch (a callback before ``AddToDatabase``),
4. right after a commit, whose last database line the test then cuts (a write torn by the kill),
   which ``repair_database`` drops before the next resume,

and a last child finishes its tuning. Every committed batch is journaled (after
``AddToDatabase``); the test then asserts that no committed record is lost, none is written twice,
stock TVM's ``JSONDatabase`` loads the result, and the last tuning completed its budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tvm.s_tir import meta_schedule as ms

from ms_droplet._database import check_database
from ms_droplet._decisions import trace_key

pytestmark = pytest.mark.tuning

ROOT = Path(__file__).resolve().parents[1]

_ZYGOTE = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path.insert(0, {root!r})
    import tvm.s_tir.tensor_intrin  # noqa: F401  (paid once, before forking)
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    import ms_droplet
    from ms_droplet._database import repair_database
    from ms_droplet._decisions import trace_key
    from ms_droplet._records import samples_of
    from ms_droplet._workloads import load_workload
    from tests.conftest import host_target

    work_dir, journal_path = sys.argv[1], sys.argv[2]
    # (attempt, hook, the attempt's n-th call of that hook to die at)
    PLAN = [("build", 2), ("build", 3), ("precommit", 2), ("postcommit", 1), None]
    TRIALS, PER_ITER, EXPLORE = 12, 4, 8

    def die():
        os.killpg(os.getpgid(0), signal.SIGKILL)  # the child and its runner worker

    def journal(entry):
        with open(journal_path, "a") as f:
            f.write(json.dumps(entry) + "\\n")
            f.flush()
            os.fsync(f.fileno())

    def attempt(number, kill):
        calls = {{"build": 0, "precommit": 0, "postcommit": 0}}

        def hook(name):
            calls[name] += 1
            if kill == (name, calls[name]):
                journal({{"attempt": number, "killed_at": name, "call": calls[name]}})
                die()

        @derived_object
        class KillableBuilder(PyBuilder):
            def build(self, build_inputs):
                results = []
                for inp in build_inputs:
                    try:
                        path = default_export(default_build(inp.mod, inp.target, None))
                        results.append(BuilderResult(path, None))
                    except Exception as err:
                        results.append(BuilderResult(None, repr(err)))
                hook("build")
                return results

        @derived_object
        class Hook(PyMeasureCallback):
            def __init__(self, name):
                super().__init__()
                self.name = name

            def apply(self, task_scheduler, task_id, cands, builder_results, runner_results):
                if self.name == "postcommit":
                    journal({{
                        "attempt": number,
                        "committed": [
                            [trace_key(c.sch.trace), samples_of(r.run_secs)]
                            for c, r in zip(cands, runner_results)
                        ],
                    }})
                hook(self.name)

        ms.tune_tir(
            load_workload("matmul:16,16,16"), host_target(), work_dir,
            max_trials_global=TRIALS, num_trials_per_iter=PER_ITER,
            strategy=ms_droplet.DropletStrategy(
                num_evolutionary_trials=EXPLORE, max_step=2,
                evolutionary={{"population_size": 16, "genetic_num_iters": 1}}),
            builder=KillableBuilder(),
            runner=ms.runner.LocalRunner(evaluator_config=ms.runner.EvaluatorConfig(
                number=1, repeat=1, min_repeat_ms=0, enable_cpu_cache_flush=False)),
            cost_model=ms.cost_model.RandomModel(seed=1),
            measure_callbacks=[
                Hook("precommit"), ms.measure_callback.AddToDatabase(), Hook("postcommit"),
            ],
            seed=1, num_tuning_cores=1,
        )
        journal({{"attempt": number, "finished": True}})

    for number, kill in enumerate(PLAN):
        pid = os.fork()
        if pid == 0:
            os.setpgid(0, 0)
            try:
                attempt(number, kill)
                code = 0
            except BaseException as err:
                print("attempt", number, "failed:", repr(err), flush=True)
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if kill is None:
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        else:
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        if kill == ("postcommit", 1):
            # The kill tore the last write: cut the record line short, as a crash mid-append does.
            path = os.path.join(work_dir, "database_tuning_record.json")
            data = open(path, "rb").read()
            open(path, "wb").write(data[:-12])
            journal({{"attempt": number, "torn": True}})
            for backup in repair_database(work_dir):  # what `ms-droplet db repair` does
                journal({{"attempt": number, "repaired": backup}})
    print("ALL ATTEMPTS DONE", flush=True)
    """
)


def _run(tmp_path: Path) -> list[dict]:
    script = tmp_path / "zygote.py"
    script.write_text(_ZYGOTE.format(root=str(ROOT)))
    journal = tmp_path / "journal.jsonl"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "wd"), str(journal)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0 and "ALL ATTEMPTS DONE" in proc.stdout, (
        proc.stdout[-3000:] + proc.stderr[-3000:]
    )
    return [json.loads(line) for line in journal.read_text().splitlines()]


def test_kills_at_several_points_lose_and_duplicate_nothing(tmp_path):
    entries = _run(tmp_path)
    wd = tmp_path / "wd"
    kills = [(e["attempt"], e["killed_at"]) for e in entries if "killed_at" in e]
    assert kills == [(0, "build"), (1, "build"), (2, "precommit"), (3, "postcommit")]
    assert [e["attempt"] for e in entries if e.get("finished")] == [4]

    committed: list[tuple[str, tuple[float, ...] | None]] = []
    for e in entries:
        if "committed" in e:
            committed += [(k, None if s is None else tuple(s)) for k, s in e["committed"]]
        if e.get("torn"):
            committed.pop()  # the record whose line the kill tore (dropped by the repair)
    # The attempts did reach their phases: exploration, descent, and a measured-not-committed
    # batch (attempt 2 committed one batch before it died between measuring and committing).
    per_attempt = {
        a: sum(len(e["committed"]) for e in entries if e.get("attempt") == a and "committed" in e)
        for a in range(5)
    }
    assert per_attempt[0] == 4  # one exploration batch, then killed while building the second
    assert per_attempt[1] > 4  # the rest of the exploration (4), then descent batches
    assert per_attempt[2] >= 1  # a descent batch before the kill between measure and commit
    assert per_attempt[4] == 12, "the last tuning did not complete its budget"

    assert check_database(str(wd)) == []
    db = ms.database.JSONDatabase(work_dir=str(wd))  # stock TVM loads it
    records = db.get_all_tuning_records()
    lines = (wd / "database_tuning_record.json").read_text().splitlines()
    # (identical lines are legitimate: a control re-measured in one batch can time the same
    # down to the last digit on a 16^3 matmul; the multiset check below is the exact one)
    assert len(lines) == len(records)
    assert len(records) == len(committed), "records were lost or added"
    stored = sorted(
        (trace_key(r.trace), None if r.run_secs is None else tuple(float(x) for x in r.run_secs))
        for r in records
    )
    failed = [k for k, s in committed if s is None]
    ok = sorted((k, s) for k, s in committed if s is not None)
    assert [x for x in stored if x[1] is not None and x[1][0] < 1e9] == ok
    assert len(stored) - len(ok) == len(failed)
