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
"""Is the descent's slot-level test calibrated on this machine? A/A batches of one real kernel.

``record``: one kernel (the best record of a MetaSchedule work dir) fills every slot of
``--batches`` LocalRunner calls of ``--batch`` slots (the runner settings of ``ms-droplet
bench``), and every slot's samples are saved. Every slot is the same kernel, so any candidate
found faster is a false positive.

``analyse``: lays the descent's batch out on each recorded batch (controls at the head, in every
8th slot and the last; see ``Descent``), tests every other slot against the controls exactly as
the descent does (``slot_comparison``, else the fallback that counts each slot as one
observation, and the earlier per-sample fallback beside it; with ``pool_noise``, the
earlier batches' slot noise as its prior) and counts how often p < alpha: a calibrated test
gives alpha. Also a confirmation (two slots, each right after a control). Then the same with a
real difference injected: the candidate's samples scaled by 1 - gain (3, 5, 8 %), whose rate
is the test's power on this machine's noise.

    python tuning_records/noise_check/aa_batches.py record --work-dir W --out aa.json
    python tuning_records/noise_check/aa_batches.py analyse aa.json [more.json ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile

from ms_droplet._records import latency, samples_of, scheduled_module
from ms_droplet._slots import (
    batch_noise,
    control_samples,
    fallback_comparison,
    slot_comparison,
    usable_controls,
)
from ms_droplet._stats import Comparison, SlotNoise, compare, noise_prior

ALPHAS = (0.05, 0.01)
#: a confirmation's level with reconfirm (0.05 / 1.5) and with two confirmations in the batch
CONFIRM_ALPHAS = (0.05 / 1.5, 0.025 / 1.5)
GAINS = (0.0, 0.03, 0.05, 0.08)


def record(args: argparse.Namespace) -> None:
    import tvm
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.support.tar import tar

    target = tvm.target.Target(
        {"kind": "llvm", "mcpu": tvm.target.codegen.llvm_get_system_cpu(), "num-cores": 2}
    )
    db = ms.database.JSONDatabase(work_dir=args.work_dir)
    recs = [r for r in db.get_all_tuning_records() if samples_of(r.run_secs)]
    best = min(recs, key=lambda r: latency(r.run_secs))
    kmod = scheduled_module(best.workload.mod, best.trace)
    path = os.path.join(tempfile.mkdtemp(prefix="aa_batches_"), "k.tar")
    tvm.compile(kmod, target=target).export_library(path, fcompile=tar)
    runner = ms.runner.LocalRunner(
        evaluator_config=ms.runner.EvaluatorConfig(
            number=3, repeat=3, min_repeat_ms=100, enable_cpu_cache_flush=False
        )
    )
    args_info = ArgInfo.from_entry_func(kmod, remove_preproc=True)
    batches = []
    for b in range(args.batches):
        inputs = [ms.runner.RunnerInput(path, "cpu", args_info) for _ in range(args.batch)]
        results = [f.result() for f in runner.run(inputs)]
        batches.append([samples_of(r.run_secs) if r.error_msg is None else None for r in results])
        print(f"batch {b + 1}/{args.batches}", flush=True)
    out = {
        "command": "python tuning_records/noise_check/aa_batches.py record "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "fn"),
        "machine": platform.processor() or platform.machine(),
        "cpu": tvm.target.codegen.llvm_get_system_cpu(),
        "tvm": tvm.__version__,
        "kernel_recorded_ms": 1e3 * latency(best.run_secs),
        "runner": {"number": 3, "repeat": 3, "min_repeat_ms": 100},
        "batches": batches,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


#: (name, batch size, control slots): the descent's layouts, today's and earlier ones
LAYOUTS = (
    ("batch 32, spread controls", 32, [0, 1, 8, 16, 24, 31]),
    ("batch 16, every 8th slot (before the even spacing)", 16, [0, 1, 8, 15]),
    ("batch 16, spread evenly (today)", 16, [0, 1, 5, 10, 15]),
    ("batch 12, every 8th slot (before the even spacing)", 12, [0, 1, 8, 11]),
    ("batch 12, spread evenly (today)", 12, [0, 1, 4, 8, 11]),
    ("batch 8, head control (small budgets before the head-and-last layout)", 8, [0]),
    ("batch 8, head and last controls (small budgets, today)", 8, [0, 7]),
    ("batch 32, head control (the first release)", 32, [0]),
)


def test(
    slots: list[int], controls: list[int], res: list, prior, per_sample: bool = False
) -> Comparison:
    """The descent's test of the candidate at ``slots`` against the controls.

    With fewer than four usable controls: today's fallback (every slot one observation) or,
    with ``per_sample``, the earlier one (every repeat one observation).
    """
    cmp = slot_comparison(slots, controls, res, prior=prior)
    if cmp is None and per_sample:
        samples = [x for i in slots for x in res[i]]
        ctrl = [x for i in slots for x in control_samples(i, controls, res)]
        cmp = compare(samples, ctrl)
    elif cmp is None:
        cmp = fallback_comparison(slots, controls, res)
    return cmp


def scaled(res: list, slots: list[int], gain: float) -> list:
    """The batch with the candidate's slots ``gain`` faster (an injected real difference)."""
    return [[x * (1.0 - gain) for x in r] if i in slots else r for i, r in enumerate(res)]


def analyse(args: argparse.Namespace) -> None:
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        batches = [b for b in data["batches"] if all(s is not None for s in b)]
        size = len(batches[0])
        print(
            f"{path}: {len(batches)} batches of {size} ({data['cpu']}, kernel "
            f"{data['kernel_recorded_ms']:.4f} ms recorded); rates of p < alpha over all tests"
        )
        for name, n, controls in LAYOUTS:
            if n > size:
                continue
            items = [i for i in range(n) if i not in controls]
            after = [c + 1 for c in controls[1 if len(controls) > 1 else 0 :] if c + 1 in items]
            pairs = [[after[j], after[j + 1]] for j in range(len(after) - 1)]
            few = len(usable_controls(controls)) < 4  # the fallback test: both versions
            for pool, per_sample in (
                ((False, True), (False, False)) if few else ((False, False), (True, False))
            ):
                if pool and len(controls) < 5:
                    continue
                print(
                    f"  {name} {controls}"
                    + (", pool_noise" if pool else "")
                    + (", per-sample fallback (before)" if few and per_sample else "")
                    + (", slot fallback (today)" if few and not per_sample else "")
                )
                for gain in GAINS:
                    screen, conf, mins = [], [], []
                    noise: list[SlotNoise] = []
                    for b in batches:
                        res = b[:n]
                        prior = noise_prior(noise) if pool else None
                        ps = [
                            test([i], controls, scaled(res, [i], gain), prior, per_sample)
                            for i in items
                        ]
                        screen += [c.pvalue for c in ps]
                        mins.append(min(c.pvalue for c in ps))
                        conf += [
                            test(q, controls, scaled(res, q, gain), prior, per_sample).pvalue
                            for q in pairs
                        ]
                        noise.append(batch_noise(controls, res))
                    line = f"    gain {gain:.2f}: screening {len(screen)}: " + ", ".join(
                        f"p<{a}: {sum(p < a for p in screen) / len(screen):.3f}" for a in ALPHAS
                    )
                    bonferroni_level = 0.05 / len(items)  # an immediate move (small budgets)
                    line += (
                        f", p<0.05/{len(items)}: "
                        f"{sum(p < bonferroni_level for p in screen) / len(screen):.3f}"
                    )
                    if conf:
                        line += f"; confirmations {len(conf)}: " + ", ".join(
                            f"p<{a:.3g}: {sum(p < a for p in conf) / len(conf):.3f}"
                            for a in CONFIRM_ALPHAS
                        )
                    if gain == 0.0:
                        bonferroni = sum(p < 0.05 / len(items) for p in mins)
                        line += (
                            f"; batches whose smallest p < 0.05: {sum(p < 0.05 for p in mins)}, "
                            f"< 0.05 / {len(items)}: {bonferroni} of {len(mins)}"
                        )
                    print(line)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(required=True)
    r = sub.add_parser("record")
    r.add_argument("--work-dir", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--batches", type=int, default=30)
    r.add_argument("--batch", type=int, default=32)
    r.set_defaults(fn=record)
    a = sub.add_parser("analyse")
    a.add_argument("files", nargs="+")
    a.set_defaults(fn=analyse)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
