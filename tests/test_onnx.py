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
"""``ms-droplet tune-model`` and ``ms_droplet.relax.tune_onnx`` on tiny ONNX models built in code.

The bad-input tests and the ``--trials 0`` tests (import, compile, export, check against
onnxruntime, no tuning) are fast and run the command line. The ``tuning`` tests share one real
tuning of the tiny CNN (``tune_onnx``, the function the command runs, with the test run's
WarmBuilder and TVM's LocalRunner, 20 trials), then resume a copy of it with the command
(same budget: nothing measured) and with the function (a larger budget).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the onnx extra: pip install 'ms_droplet[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'ms_droplet[onnx]'")

import tvm  # noqa: E402
from tvm import relax  # noqa: E402
from tvm.s_tir import meta_schedule as ms  # noqa: E402

from ms_droplet import _onnx  # noqa: E402
from ms_droplet import relax as droplet_relax  # noqa: E402
from ms_droplet.cli import main  # noqa: E402

from ._onnx_models import save, tiny_cnn  # noqa: E402
from .conftest import host_target  # noqa: E402

TRIALS = 20  # 5 tasks x one batch of 4
FAST = ["--rounds", "2", "--repeat", "2", "--min-repeat-ms", "10", "--no-progress"]


def _cli(model: str, out: Path, *extra: str) -> int:
    return main(["tune-model", model, "--out", str(out), *extra])


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _records(out: Path) -> int:
    return len(ms.database.JSONDatabase(work_dir=str(out)).get_all_tuning_records())


# ------------------------------------------------------------------------------------------
# Input shapes and bad input (fast)
# ------------------------------------------------------------------------------------------


def test_parse_input_shape() -> None:
    assert _onnx.parse_input_shape("x:1x3x224x224") == ("x", (1, 3, 224, 224))
    assert _onnx.parse_input_shape("input:0:1x8") == ("input:0", (1, 8))
    assert _onnx.parse_input_shape("2x5") == (None, (2, 5))
    for bad in ("x:", "x:1x0", "x:1xa", "x:-1x3", ""):
        with pytest.raises(ValueError, match="NAME:DxDx"):
            _onnx.parse_input_shape(bad)


def test_model_inputs_static_dynamic_and_given() -> None:
    static = tiny_cnn()
    assert _onnx.model_inputs(static) == [_onnx.InputSpec("x", (1, 3, 16, 16), "float32")]
    dynamic = tiny_cnn(input_dims=("N", 3, 16, 16))
    assert _onnx.model_inputs(dynamic, {"x": (4, 3, 16, 16)})[0].shape == (4, 3, 16, 16)
    assert _onnx.model_inputs(dynamic, {None: (2, 3, 16, 16)})[0].shape == (2, 3, 16, 16)
    with pytest.raises(_onnx.OnnxModelError, match=r"'x' has a dynamic shape \[N, 3, 16, 16\]"):
        _onnx.model_inputs(dynamic)
    with pytest.raises(_onnx.OnnxModelError, match="--input-shape x:1x3x16x16"):
        _onnx.model_inputs(dynamic)


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((1, 3, 16), "does not match the model's input 'x'"),  # rank
        ((1, 4, 16, 16), "does not match the model's input 'x'"),  # a fixed dimension
    ],
)
def test_model_inputs_mismatching_shape(shape, match) -> None:
    with pytest.raises(_onnx.OnnxModelError, match=match):
        _onnx.model_inputs(tiny_cnn(input_dims=("N", 3, 16, 16)), {"x": shape})


def test_model_inputs_unknown_name() -> None:
    with pytest.raises(_onnx.OnnxModelError, match="names no input of the model: y; its inputs"):
        _onnx.model_inputs(tiny_cnn(), {"y": (1, 3, 16, 16)})


def test_import_names_the_unsupported_operator() -> None:
    model = tiny_cnn(activation="Celu")  # a standard op that onnxruntime runs, TVM 0.27 does not
    inputs = _onnx.model_inputs(model)
    with pytest.raises(_onnx.OnnxModelError, match=r"does not support the operator\(s\) Celu"):
        _onnx.import_model(model, inputs)


def test_compare_outputs() -> None:
    ref = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    ok = _onnx.compare_outputs([ref + 1e-6], [ref], ["y"], rtol=1e-4, atol=1e-5)[0]
    assert ok.passed
    assert ok.max_abs_diff == pytest.approx(1e-6, rel=0.1)
    bad = _onnx.compare_outputs([ref + 1e-2], [ref], ["y"], rtol=1e-4, atol=1e-5)[0]
    assert not bad.passed
    shape = _onnx.compare_outputs([ref[:2]], [ref], ["y"], rtol=1e-4, atol=1e-5)[0]
    assert not shape.passed


def _bad_cases(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a protobuf\n")
    return {
        "not onnx": ([str(text)], "is not an ONNX model"),
        "missing": ([str(tmp_path / "nope.onnx")], "does not exist"),
        "unsupported op": (
            [save(tiny_cnn(activation="Celu"), tmp_path / "celu.onnx")],
            "does not support the operator(s) Celu",
        ),
        "dynamic": (
            [save(tiny_cnn(input_dims=("N", 3, 16, 16)), tmp_path / "dyn.onnx")],
            "give one with --input-shape x:1x3x16x16",
        ),
        "mismatch": (
            [save(tiny_cnn(), tmp_path / "static.onnx"), "--input-shape", "x:2x3x16x16"],
            "does not match the model's input 'x' of shape [1, 3, 16, 16]",
        ),
        "unparsable shape": (
            [str(tmp_path / "static.onnx"), "--input-shape", "x:1x3xfoo"],
            "expected NAME:DxDx",
        ),
    }


def test_cli_bad_input_exit_2(tmp_path: Path, capsys) -> None:
    for name, (argv, message) in _bad_cases(tmp_path).items():
        code = _cli(argv[0], tmp_path / "out", *argv[1:], "--trials", "0", *FAST)
        err = capsys.readouterr().err
        assert code == 2, name
        assert message in err, (name, err)
        assert "Traceback" not in err, name
    assert not (tmp_path / "out" / "model.so").exists()


# ------------------------------------------------------------------------------------------
# No tuning: import, compile, export, check (fast)
# ------------------------------------------------------------------------------------------


def test_cli_dynamic_batch_with_input_shape_checks_against_onnxruntime(tmp_path: Path) -> None:
    model = save(tiny_cnn(input_dims=("N", 3, 16, 16)), tmp_path / "dyn.onnx")
    out = tmp_path / "out"
    assert _cli(model, out, "--input-shape", "x:3x3x16x16", "--trials", "0", *FAST) == 0
    report = _report(out)
    assert report["inputs"] == [{"name": "x", "shape": [3, 3, 16, 16], "dtype": "float32"}]
    assert report["check"]["tuned"]["passed"] is True
    assert report["trials_in_database"] == 0
    assert set(report["timing"]["builds"]) == {"onnxruntime", "untuned", "tuned", "tuned (A/A)"}
    # the exported library runs by itself and agrees with onnxruntime
    x = np.random.default_rng(5).standard_normal((3, 3, 16, 16)).astype(np.float32)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(out / "model.so")), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_output_mismatch_is_an_error(tmp_path: Path, monkeypatch, capsys) -> None:
    model = save(tiny_cnn(), tmp_path / "m.onnx")
    real = _onnx.run_onnxruntime
    # a reference that differs by 0.5 stands for a miscompiled build
    monkeypatch.setattr(_onnx, "run_onnxruntime", lambda s, a: [y + 0.5 for y in real(s, a)])
    out = tmp_path / "out"
    assert _cli(model, out, "--trials", "0", *FAST) == 1
    err = capsys.readouterr().err
    assert "the tuned build's output 'y' differs from onnxruntime's" in err
    report = _report(out)
    assert report["check"]["tuned"]["passed"] is False
    assert report["check"]["tuned"]["max_abs_diff"] == pytest.approx(0.5, rel=1e-3)
    assert "skipped" in report["timing"]


def test_interrupted_tuning_keeps_its_time(tmp_path: Path, monkeypatch, capsys) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C, or SIGTERM through the CLI's handler, raises

    monkeypatch.setattr(droplet_relax, "tune_relax", interrupted)
    out = tmp_path / "out"
    assert _cli(save(tiny_cnn(), tmp_path / "m.onnx"), out, "--trials", "8", *FAST) == 130
    assert "run the same command again to continue" in capsys.readouterr().err
    (line,) = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert line["interrupted"] is True and line["trials"] == 0 and line["tuning_seconds"] >= 0


def test_python_api_without_tuning(tmp_path: Path) -> None:
    model = tiny_cnn()
    report = droplet_relax.tune_onnx(
        model, host_target(), str(tmp_path / "api"), 0, timing_rounds=0, seed=3
    )
    assert report.passed
    assert report.check["tuned"]["max_abs_diff"] < 1e-4
    assert report.num_tasks >= 3
    assert (tmp_path / "api" / "model.so").is_file()
    assert "not timed" in report.timing["skipped"]


# ------------------------------------------------------------------------------------------
# Real tuning (WarmBuilder, LocalRunner), shared
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def builder(warm_builder):
    """The test run's WarmBuilder (its workers' start-up is paid once per run)."""
    return warm_builder


def _tune(model: str, out: Path, trials: int, builder) -> droplet_relax.ModelTuneReport:
    """What ``ms-droplet tune-model`` runs, with the module's warm builder (started once)."""
    return droplet_relax.tune_onnx(
        model,
        host_target(),
        str(out),
        trials,
        builder=builder,
        runner=ms.runner.LocalRunner(
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=2, min_repeat_ms=10)
        ),
        num_evolutionary_trials=4,
        timing_rounds=2,
        repeat=2,
        min_repeat_ms=10,
    )


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, builder) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("tune_model")
    model = save(tiny_cnn(), base / "tiny.onnx")
    out = base / "out"
    _tune(model, out, TRIALS, builder)
    return model, out


@pytest.mark.tuning
def test_tune_model_end_to_end(tuned) -> None:
    model, out = tuned
    for name in ("model.so", "report.json", "report.md", "database_tuning_record.json"):
        assert (out / name).is_file(), name
    report = _report(out)
    assert report["trials_in_database"] == _records(out) >= TRIALS
    assert report["trials_this_run"] == report["trials_in_database"]
    assert report["failed_trials_this_run"] < report["trials_this_run"]
    assert report["check"]["tuned"]["passed"] is True
    assert report["num_tasks"] == len(report["tasks"]) >= 3
    assert all(t["trials"] > 0 for t in report["tasks"])
    assert sum(t["best_us"] is not None for t in report["tasks"]) >= 3
    builds = report["timing"]["builds"]
    assert list(builds) == ["onnxruntime", "untuned", "tuned", "tuned (A/A)"]
    for b in builds.values():
        assert b["median_ms"] > 0 and b["ci95_ms"][0] <= b["median_ms"] <= b["ci95_ms"][1]
        assert len(b["samples_s"]) == 2 * 2  # rounds x repeat
    assert set(report["timing"]["ratios"]) == {
        "onnxruntime / tuned",
        "untuned / tuned",
        "tuned (A/A) / tuned",
    }
    md = (out / "report.md").read_text()
    assert "tuned (A/A)" in md and "fused_conv2d" in md
    # the exported library runs by itself and agrees with onnxruntime on other inputs
    lib = tvm.runtime.load_module(str(out / "model.so"))
    x = np.random.default_rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32)
    got = relax.VirtualMachine(lib, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.tuning
def test_tune_model_resumes_and_measures_nothing_twice(tuned, builder, tmp_path: Path) -> None:
    model, first = tuned
    out = tmp_path / "resumed"
    shutil.copytree(first, out)
    before = _records(out)
    lines = (out / "database_tuning_record.json").read_text().splitlines()
    # the same budget again: nothing is measured, the library is rebuilt, checked and timed
    assert _cli(model, out, "--trials", str(TRIALS), *FAST) == 0
    report = _report(out)
    assert report["trials_this_run"] == 0
    assert _records(out) == before
    assert report["check"]["tuned"]["passed"] is True
    # a larger budget measures only the difference, and keeps every earlier record
    _tune(model, out, before + 8, builder)
    report = _report(out)
    after = _records(out)
    assert before + 8 <= after <= before + 8 + report["num_tasks"]
    assert report["trials_this_run"] == after - before
    assert (out / "database_tuning_record.json").read_text().splitlines()[: len(lines)] == lines
    history = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [h["trials_in_database"] for h in history] == [before, before, after]
    total = sum(h["tuning_seconds"] for h in history)
    assert report["tuning_seconds_total"] == pytest.approx(total)


@pytest.mark.tuning
def test_tune_model_refuses_another_model_in_the_same_folder(tuned, tmp_path: Path, capsys) -> None:
    _, out = tuned
    other = save(tiny_cnn(seed=1), tmp_path / "other.onnx")
    assert _cli(other, out, "--trials", "0", *FAST) == 2
    assert "holds the tuning of another model" in capsys.readouterr().err
