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
"""The upstream patch: scipy-free t-test, generation, and the patched TVM tree end to end.

The end-to-end test copies the installed ``tvm`` package into a source-tree layout
(``<tmp>/python/tvm``: .py files copied, libraries and other data symlinked), commits it to a
scratch git repository, applies the generated patch with ``git apply`` and then, in subprocesses
that cannot import ``ms_droplet`` (nor scipy), tunes a small matmul with ``strategy="droplet"``
and runs the patch's own TVM test file with pytest.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import tvm
from scipy import stats

from ms_droplet import _stats, _upstream
from ms_droplet._upstream import _welch
from ms_droplet.cli import main

from ._site import sitecustomize as _site

GIT = shutil.which("git")
TVM_PKG = Path(tvm.__file__).resolve().parent


# ------------------------------------------------------------------------- the scipy-free test
def _scipy_less(a, b) -> float:
    return float(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def test_student_t_cdf_matches_scipy():
    for df in (1.0, 1.7, 2.0, 3.3, 5.0, 12.5, 40.0, 300.0, 5000.0):
        for t in (-40.0, -8.0, -3.1, -1.0, -0.2, 0.0, 0.3, 1.5, 2.9, 7.0, 25.0):
            want = float(stats.t.cdf(t, df))
            got = _welch.student_t_cdf(t, df)
            assert abs(got - want) < 1e-9, (t, df, got, want)
            if want < 1e-3:  # small p-values (those that decide moves) also relatively close
                assert abs(got - want) <= 1e-6 * want, (t, df, got, want)


@pytest.mark.filterwarnings("ignore:Precision loss occurred:RuntimeWarning")
def test_welch_fallback_matches_scipy():
    rng = random.Random(0)
    cases = [
        ([1.0, 1.1, 0.9], [2.0, 2.1, 1.9]),
        ([0.5, 0.51], [0.5, 0.52, 0.49, 0.55, 0.5, 0.53]),
        ([3.0, 2.0, 2.5, 2.2, 2.4], [1.0, 1.5, 1.2]),
        ([1.0, 1.0, 1.0], [1.0, 1.2, 1.1]),  # zero variance on one side
    ]
    for _ in range(40):
        na, nb = rng.randint(2, 12), rng.randint(2, 12)
        shift = rng.uniform(-0.3, 0.3)
        a = [math.log(1e-3 * (1 + shift) * rng.lognormvariate(0, 0.05)) for _ in range(na)]
        b = [math.log(1e-3 * rng.lognormvariate(0, rng.uniform(0.01, 0.2))) for _ in range(nb)]
        cases.append((a, b))
    for a, b in cases:
        want = _scipy_less(a, b)
        got = _welch.welch_less_pvalue(a, b)  # here _scipy_stats is None: the fallback
        assert abs(got - want) < 1e-6, (a, b, got, want)


def _load_generated_stats(scipy_stats) -> types.ModuleType:
    source = _upstream.render_module("_stats")
    assert "scipy" in source and "_welch_less_pvalue(log_a, log_b)" in source
    name = "_generated_droplet_stats"
    module = types.ModuleType(name)
    sys.modules[name] = module  # dataclasses look their module up in sys.modules
    try:
        exec(compile(source, "_droplet_stats.py", "exec"), module.__dict__)
    finally:
        del sys.modules[name]
    module._scipy_stats = scipy_stats
    return module


@pytest.mark.parametrize("use_scipy", [True, False])
def test_generated_stats_module_matches_package(use_scipy):
    generated = _load_generated_stats(stats if use_scipy else None)
    rng = random.Random(1)
    for _ in range(30):
        a = [1e-3 * rng.lognormvariate(0, 0.05) for _ in range(rng.randint(1, 6))]
        b = [1e-3 * rng.lognormvariate(0.02, 0.05) for _ in range(rng.randint(1, 6))]
        want, got = _stats.compare(a, b), generated.compare(a, b)
        assert got.ratio == want.ratio
        if want.pvalue is None:
            assert got.pvalue is None
        else:
            assert abs(got.pvalue - want.pvalue) < 1e-6


# ------------------------------------------------------------------------- generation
def _fake_tvm_checkout(root: Path) -> Path:
    """Just the files the generator reads, copied from the installed package."""
    for rel in ("s_tir/meta_schedule/__init__.py", "s_tir/meta_schedule/search_strategy"):
        src, dst = TVM_PKG / rel, root / "python" / "tvm" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, dst)
    return root


def test_generated_files_carry_no_ms_droplet(tmp_path):
    files = _upstream.generate_files(_fake_tvm_checkout(tmp_path))
    paths = {f.path for f in files}
    ss = _upstream.SS_DIR
    assert {f"{ss}/droplet.py", f"{ss}/search_strategy.py", f"{ss}/__init__.py"} <= paths
    assert _upstream.TEST_PATH in paths
    for f in files:
        assert "ms_droplet" not in f.new and "ms-droplet" not in f.new, f.path
        assert f.new.startswith("# Licensed to the Apache Software Foundation"), f.path
        if f.old is None:
            assert max(len(line) for line in f.new.splitlines()) <= 100, f.path
        if f.path.endswith(".py") and f.path.startswith(ss):
            assert "import scipy" not in f.new.replace("from scipy import stats as", ""), f.path
    create = next(f for f in files if f.path.endswith("/search_strategy.py")).new
    assert create.count('"droplet",') == 2
    assert 'if kind == "droplet":' in create
    # Generating against an already patched tree gives no change at all.
    for f in files:
        path = tmp_path / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.new, encoding="utf-8")
    assert _upstream.generate_files(tmp_path) == []


def test_generated_files_pass_tvm_ruff(tmp_path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    files = _upstream.generate_files(_fake_tvm_checkout(tmp_path / "tvm"))
    out = tmp_path / "gen"
    for f in files:
        path = out / f.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f.new, encoding="utf-8")
    # The ruff settings of apache/tvm's pyproject.toml, which the template also passes.
    shutil.copyfile(_upstream.TVM_RUFF_CONFIG, out / "ruff.toml")
    for cmd in ([ruff, "check", "--no-cache", "."], [ruff, "format", "--check", "--no-cache", "."]):
        res = subprocess.run(cmd, cwd=out, capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr


def test_cli_rejects_a_non_tvm_dir(tmp_path, capsys):
    assert main(["upstream-patch", "--tvm-source", str(tmp_path), "--out", "x.patch"]) == 2
    assert "v0.27 layout" in capsys.readouterr().err
    assert not (tmp_path / "x.patch").exists()


# ------------------------------------------------------------------------- end to end
def _mirror(src: Path, dst: Path) -> None:
    """Copy the .py files, bytecode caches and small files of ``src``; symlink the rest.

    The shared libraries (``lib/``) and other big or .py-free folders are symlinks: TVM finds its
    libraries relative to its package directory (``tvm/libinfo.py``), which the symlinks keep.
    """
    dst.mkdir(parents=True)
    for entry in os.scandir(src):
        s, d = Path(entry.path), dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            if entry.name == "__pycache__":
                shutil.copytree(s, d)  # copy2 keeps mtimes: the caches stay valid
            elif any(f.endswith(".py") for _, _, fs in os.walk(s) for f in fs):
                _mirror(s, d)
            else:
                d.symlink_to(s, target_is_directory=True)
        elif entry.name.endswith(".py") or entry.stat().st_size < 64 * 1024:
            shutil.copy2(s, d)
        else:
            d.symlink_to(s)


_BLOCKER = """\
import sys


class _Blocker:
    # ms_droplet must not leak into the patched TVM, and scipy is not a TVM dependency.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ms_droplet", "scipy"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


sys.meta_path.insert(0, _Blocker())
"""

_TUNE_SCRIPT = """\
import json
import os
import sys
import tempfile

import numpy as np

for blocked in ("ms_droplet", "scipy"):
    try:
        __import__(blocked)
    except ImportError:
        pass
    else:
        raise AssertionError(f"{blocked} is importable in the patched environment")

import tvm
from tvm import te
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms
from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult
from tvm.s_tir.meta_schedule.search_strategy import DropletStrategy, _droplet_stats
from tvm.s_tir.meta_schedule.testing import te_workload

assert tvm.__file__.startswith(os.environ["PATCHED_TVM"]), tvm.__file__
assert _droplet_stats._scipy_stats is None
BUILT = {}


@derived_object
class InProcessBuilder(PyBuilder):
    # Real builds (LocalBuilder's build function) without LocalBuilder's worker processes.
    def build(self, build_inputs):
        out = []
        for inp in build_inputs:
            key = f"in-process:{len(BUILT)}"
            BUILT[key] = default_build(inp.mod, inp.target, None)
            out.append(BuilderResult(key, None))
        return out


@derived_object
class Done(PyRunnerFuture):
    def __init__(self, result):
        super().__init__()
        self.res = result

    def done(self):
        return True

    def result(self):
        return self.res


@derived_object
class InProcessRunner(PyRunner):
    # Real runs with time_evaluator, in this process.
    def run(self, runner_inputs):
        dev = tvm.cpu()
        out = []
        for inp in runner_inputs:
            rt_mod = BUILT.pop(str(inp.artifact_path))
            args = []
            for info in inp.args_info:
                arr = tvm.runtime.empty([int(x) for x in info.shape], str(info.dtype), dev)
                arr.copyfrom(np.random.rand(*arr.shape).astype(arr.dtype))
                args.append(arr)
            f = rt_mod.time_evaluator(rt_mod.entry_name, dev, number=5, repeat=3)
            out.append(Done(RunnerResult([float(x) for x in f(*args).results], None)))
        return out


def tune(strategy, trials):
    work_dir = tempfile.mkdtemp()
    db = ms.tune_tir(
        tvm.IRModule({"main": te.create_prim_func(te_workload.matmul(32, 32, 32))}),
        tvm.target.Target({"kind": "llvm", "num-cores": 1}),
        work_dir,
        max_trials_global=trials,
        num_trials_per_iter=8,
        strategy=strategy,
        builder=InProcessBuilder(),
        runner=InProcessRunner(),
        cost_model="random",
        measure_callbacks=[ms.measure_callback.AddToDatabase()],
        num_tuning_cores=1,
        seed=1,
    )
    logs = ""
    for name in os.listdir(os.path.join(work_dir, "logs")):
        with open(os.path.join(work_dir, "logs", name), encoding="utf-8") as f:
            logs += f.read()
    secs = [min(float(x) for x in r.run_secs) for r in db.get_all_tuning_records()]
    return {"records": len(secs), "best_ms": 1e3 * min(secs), "logs": logs}


def test_tune_with_the_patched_tvm():
    evo = {"population_size": 16, "init_min_unmeasured": 8, "genetic_num_iters": 1}
    by_name = tune("droplet", 8)
    descent = tune(DropletStrategy(num_evolutionary_trials=8, evolutionary=evo), 24)
    with open(os.environ["TUNE_RESULT"], "w", encoding="utf-8") as f:
        json.dump({"by_name": by_name, "descent": descent}, f)
"""


def _git(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    cmd = [GIT or "git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    cmd += ["-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)


@pytest.mark.tuning
@pytest.mark.skipif(GIT is None, reason="needs git")
def test_patch_applies_and_tunes_without_ms_droplet(tmp_path):
    root = tmp_path / "tvm"
    _mirror(TVM_PKG, root / "python" / "tvm")
    assert _git("init", "-q", cwd=root).returncode == 0
    (root / ".git" / "info" / "exclude").write_text("__pycache__/\n", encoding="utf-8")
    assert _git("add", "-A", cwd=root).returncode == 0
    res = _git("commit", "-q", "-m", "v0.27 python tree", cwd=root)
    assert res.returncode == 0, res.stderr

    patch = tmp_path / "droplet.patch"
    assert main(["upstream-patch", "--tvm-source", str(root), "--out", str(patch)]) == 0
    text = patch.read_text(encoding="utf-8")
    assert text.startswith("From ") and "\nSubject: [PATCH] " in text
    res = _git("apply", "--check", str(patch), cwd=root)
    assert res.returncode == 0, res.stderr
    res = _git("apply", str(patch), cwd=root)
    assert res.returncode == 0, res.stderr
    status = _git("status", "--porcelain", cwd=root).stdout
    assert "search_strategy/droplet.py" in status and "search_strategy.py" in status

    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_BLOCKER, encoding="utf-8")
    # the test run's lazy GPU/DSP intrinsics (tests/_site), under a name of its own here
    lazy = Path(_site.__file__).read_text(encoding="utf-8")
    (blocker / "_lazy_intrinsics.py").write_text(lazy, encoding="utf-8")
    with open(blocker / "sitecustomize.py", "a", encoding="utf-8") as f:
        f.write("\nimport _lazy_intrinsics\n\n_lazy_intrinsics.install()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(root / "python"), str(blocker)]),
        PYTHONNOUSERSITE="1",
        OMP_NUM_THREADS="1",
        TVM_NUM_THREADS="1",
    )
    # One process runs both the patch's own TVM test file and the tuning checks (each new TVM
    # process pays for importing its tensor intrinsics).
    tune_test = tmp_path / "checks" / "test_tune_without_ms_droplet.py"
    tune_test.parent.mkdir()
    tune_test.write_text(_TUNE_SCRIPT, encoding="utf-8")
    result = tmp_path / "tune.json"
    env.update(PATCHED_TVM=str(root), TUNE_RESULT=str(result))
    test_file = root / _upstream.TEST_PATH
    pytest_cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:logging",
    ]
    run = subprocess.run(
        [*pytest_cmd, str(test_file), str(tune_test)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-2000:]
    out = json.loads(result.read_text(encoding="utf-8"))
    assert out["by_name"]["records"] == 8
    assert "Droplet: exploring with EvolutionarySearch" in out["by_name"]["logs"]
    descent = out["descent"]
    assert 8 < descent["records"] <= 24, descent["records"]
    assert "from the best record not descended from yet" in descent["logs"], descent["logs"][-3000:]
    assert descent["best_ms"] > 0
