"""Adopt a rerun's audit for a committed study run, once the rerun is shown to be the same run (issue 15).

    python -m trl_lab.scripts.study --arm flawed_rm --seed 42 --cpu_bf16 false      # rerun, with its audit
    python -m trl_lab.scripts.study_rerun docs/results/study/arm5_flawed_rm/seed42 outputs/study/arm5_flawed_rm/seed42

A study run's truth is its audit, scored on the adapters saved along the run; where those were lost before the
audit was committed, only a rerun can be audited. A rerun is a different run unless it reproduces the original: the
fp32 runs do, across CPUs (the bf16 kernels of AVX512-BF16 and AMX round differently, so bf16 runs do not). This
compares the two folders' held-out answers (``heldout/step_*.jsonl``: the text and the verdict of every answer at
every evaluation), their train logs (reward, loss, completion length per step) and the Goodhart detector's verdict.
Only when the train logs agree within ``--tolerance`` and every held-out answer is the same text (or all but
``--max_answer_differences`` of them, each listed) does it copy the rerun's ``audit.json`` into the original
folder, beside ``rerun.json`` (the comparison, the rerun's command and its ``study_run.json``); otherwise it exits
with the first difference and copies nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from trl_lab.report import load_goodhart, load_log_history
from trl_lab.scripts.study_summary import _heldout_rows

__all__ = ["compare_runs", "main"]

#: Train-log keys compared step by step.
TRAIN_KEYS = ("reward", "loss", "completions/mean_length")


def compare_runs(original: str | Path, rerun: str | Path, *, tolerance: float = 1e-4,
                 max_answer_differences: int = 0) -> dict[str, Any]:
    """The comparison of two run folders; raises ``ValueError`` naming the first difference that makes them two runs.

    The train logs must agree within ``tolerance`` at every step: the weights are what the training computed, so
    that is the test of one run. Held-out answers are decoded afresh at each evaluation, by kernels that may round
    differently on another CPU even when the weights are the same; up to ``max_answer_differences`` answers may
    differ in all (default 0), each one listed in the record's ``heldout_differences``.
    """
    original, rerun = Path(original), Path(rerun)
    steps = sorted(int(p.stem[len("step_"):]) for p in (original / "heldout").glob("step_*.jsonl"))
    if not steps:
        raise ValueError(f"{original}: no held-out answers (heldout/step_*.jsonl) to compare")
    train_a = [e for e in load_log_history(original) if "loss" in e]
    train_b = {e["step"]: e for e in load_log_history(rerun) if "loss" in e}
    worst = dict.fromkeys(TRAIN_KEYS, 0.0)
    for entry in train_a:
        other = train_b.get(entry["step"])
        if other is None:
            raise ValueError(f"metrics.jsonl: the rerun logged no training step {entry['step']}")
        for key in TRAIN_KEYS:
            if key in entry:
                worst[key] = max(worst[key], abs(float(entry[key]) - float(other[key])))
                if worst[key] > tolerance:
                    raise ValueError(f"metrics.jsonl step {entry['step']}: {key} {entry[key]} vs {other[key]} "
                                     f"(tolerance {tolerance}): not the same run")
    heldout: dict[str, dict[str, int]] = {}
    differences: list[dict[str, Any]] = []
    for step in steps:
        name = f"step_{step:06d}.jsonl"
        a, b = _heldout_rows(original, step), _heldout_rows(rerun, step)
        if b is None:
            raise ValueError(f"{rerun}: no heldout/{name}: the rerun did not evaluate where the original did")
        if len(a) != len(b):
            raise ValueError(f"heldout/{name}: {len(a)} answers in the original, {len(b)} in the rerun")
        differed_before = len(differences)
        for x, y in zip(a, b):
            if x["index"] != y["index"]:
                raise ValueError(f"heldout/{name}: item {x['index']} in the original where the rerun has {y['index']}")
            if x.get("completion") != y.get("completion"):
                differences.append({"step": step, "index": x["index"], "original_correct": x["correct"],
                                    "rerun_correct": y["correct"], "original": x.get("completion"),
                                    "rerun": y.get("completion")})
                if len(differences) > max_answer_differences:
                    raise ValueError(f"heldout/{name}, item {x['index']}: the rerun answered differently "
                                     f"({x.get('completion')!r:.80} vs {y.get('completion')!r:.80}), "
                                     f"{len(differences)} answer(s) differ (allowed: {max_answer_differences}): "
                                     f"not the same run")
        heldout[str(step)] = {"items": len(a), "same_completion": len(a) - (len(differences) - differed_before),
                              "same_correct": sum(x["correct"] == y["correct"] for x, y in zip(a, b))}
    verdicts = [(load_goodhart(run) or {}).get("triggered_step") for run in (original, rerun)]
    if verdicts[0] != verdicts[1]:
        raise ValueError(f"goodhart.json: the detector stopped the original at {verdicts[0]} and the rerun at "
                         f"{verdicts[1]}")
    return {"heldout_identical": heldout, **({"heldout_differences": differences} if differences else {}),
            "train_steps_compared": len(train_a),
            **{f"max_abs_diff/{key}": value for key, value in worst.items()}, "goodhart_triggered_step": verdicts}


def _audit_summary(path: Path) -> dict[str, Any] | None:
    """Size and per-step accuracy of the audit a rerun's replaces (kept in ``rerun.json``), or None."""
    if not path.is_file():
        return None
    audit = json.loads(path.read_text())
    return {"audit_size": audit.get("audit_size"),
            "accuracy": {step: v["accuracy"] for step, v in audit.get("steps", {}).items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("original", help="the committed run folder (docs/results/study/arm*/seed*)")
    parser.add_argument("rerun", help="the rerun's folder, audited (outputs/study/arm*/seed*)")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="largest difference allowed in a train-log value (reward, loss, length)")
    parser.add_argument("--max_answer_differences", type=int, default=0,
                        help="held-out answers (in all) the rerun may word differently when its train logs agree "
                             "(decoding kernels can round differently across CPUs); each is listed in rerun.json")
    args = parser.parse_args(argv)
    original, rerun = Path(args.original), Path(args.rerun)
    if not (rerun / "audit.json").is_file():
        parser.error(f"{rerun}: no audit.json (python -m trl_lab.scripts.study_audit {rerun})")
    try:
        record = compare_runs(original, rerun, tolerance=args.tolerance,
                              max_answer_differences=args.max_answer_differences)
    except ValueError as err:
        sys.exit(f"study_rerun: {err}; nothing copied")
    run_info = json.loads((rerun / "study_run.json").read_text()) if (rerun / "study_run.json").is_file() else {}
    differ = len(record.get("heldout_differences", []))
    replaced = _audit_summary(original / "audit.json")
    lost = (f"the original's {replaced['audit_size']}-question audit was made on adapters since lost"
            if replaced else "the original's adapters were lost before its audit was committed")
    record = {"why": lost + "; this rerun reproduced it "
                     + ("answer for answer" if not differ else
                        f"step for step in its train logs, with {differ} held-out answer(s) decoded differently "
                        "(heldout_differences)") + ", so its audit is the original's truth",
              "command": run_info.get("command"), "date": datetime.date.today().isoformat(), **record,
              **({"replaced_audit": replaced} if replaced else {}), "rerun_study_run": run_info}
    shutil.copy(rerun / "audit.json", original / "audit.json")
    (original / "rerun.json").write_text(json.dumps(record, indent=2) + "\n")
    same = sum(v["same_completion"] for v in record["heldout_identical"].values())
    total = sum(v["items"] for v in record["heldout_identical"].values())
    print(f"{original}: same run ({same} of {total} held-out answers identical); audit.json and rerun.json written")
    return record


if __name__ == "__main__":
    main()
