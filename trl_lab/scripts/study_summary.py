"""Summarise the study's runs: one row per run, one line per arm, a figure per arm with its seeds overlaid.

    python -m trl_lab.scripts.study_summary docs/results/study       # reads <root>/arm*/seed*/

For each run folder (the layout :mod:`trl_lab.scripts.study` writes: ``arm<N>_<arm>/seed<S>/``) it reads
``metrics.jsonl``, ``goodhart.json``, ``study_run.json`` and the held-out answers (``heldout/step_*.jsonl``), and
gives: held-out accuracy at step 0, at its best evaluation and at the last one; the exact paired McNemar test of
step 0 against the last and the best evaluation, where every held-out answer was kept (else ``null``: a paired test
needs the same items at both steps); the train reward over the first and last five steps; strict accuracy, format
rate and mean answer length at step 0 and at the end; the KL to the reference at the end; the detector's trigger
and the health monitor's warnings.
Writes ``<root>/study.json`` (every number), ``<root>/arm<N>_<arm>/seeds.png`` (the arm's seeds overlaid: reward,
held-out accuracy, KL) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import re
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl_lab.callbacks.health import replay_run
from trl_lab.report import load_goodhart, load_log_history, mcnemar_exact, series, write_overlay_report
from trl_lab.scripts.study import flag_value

__all__ = ["AUDIT_FALL_P", "CONTRAST_ARMS", "HACKED_ARMS", "LEASH_RM", "REPLAYED_DETECTORS", "arm_summary",
           "audit_relabelled", "format_audit", "format_audit_growth", "format_health", "format_leash",
           "format_ppo_vs_grpo", "format_precision", "format_rm_holdup", "format_stopping_rules_by_audit",
           "format_tone", "is_hacked", "main", "precision_pairs", "replay_detector", "run_record",
           "score_stopping_rules", "score_stopping_rules_by_audit", "stopping_rules", "summarise_study",
           "write_headline"]

_RUN = re.compile(r"arm(\d+)_(\w+)$")
#: The RM the leash arms share (arm 5's flawed one): their runs differ only in beta.
LEASH_RM = "length_biased"


def _heldout_rows(run: Path, step: int) -> list[dict[str, Any]] | None:
    """The held-out table the job wrote at ``step`` (``heldout/step_*.jsonl``), or None when it kept none."""
    table = run / "heldout" / f"step_{step:06d}.jsonl"
    if not table.is_file():
        return None
    return [json.loads(line) for line in table.read_text().splitlines() if line]


def _answers(run: Path, step: int) -> dict[int, bool] | None:
    rows = _heldout_rows(run, step)
    return None if rows is None else {row["index"]: bool(row["correct"]) for row in rows}


def _tone(run: Path, step: int) -> float | None:
    """Mean VADER compound score (-1 gloomy .. +1 cheerful) of the held-out answers at ``step``: a measure of tone
    that no run trains against (arm 6's reward is a learned sentiment RM, not VADER), or None without the answers."""
    rows = _heldout_rows(run, step)
    if rows is None:
        return None
    texts = [row["completion"] for row in rows if "completion" in row]
    if not texts:
        return None
    return statistics.fmean(_vader()(prompts=None, completions=texts))


@functools.cache
def _vader() -> Any:
    from trl_lab.rewards.registry import get_reward

    return get_reward("sentiment", backend="vader")


def _paired(run: Path, first: int, later: int, n: int) -> dict[str, Any] | None:
    a, b = _answers(run, first), _answers(run, later)
    if a is None or b is None or len(a) != n or set(a) != set(b):
        return None  # only the first few answers were kept: no paired test
    items = sorted(a)
    return mcnemar_exact([a[i] for i in items], [b[i] for i in items])


def _audit(run: Path) -> tuple[dict[int, float], int | None]:
    """Audit-set accuracy by step (``audit.json`` of :mod:`trl_lab.scripts.study_audit`) and the audit's size; empty
    and None when not audited."""
    path = run / "audit.json"
    if not path.is_file():
        return {}, None
    audit = json.loads(path.read_text())
    return ({int(step): v["accuracy"] for step, v in sorted(audit["steps"].items(), key=lambda kv: int(kv[0]))},
            audit["audit_size"])


def _audit_growth(run: Path) -> list[dict[str, Any]]:
    """For an audit grown with ``study_audit --extend``: per size it went through (the kept ``audit_<n>.json`` files,
    then ``audit.json``), the audit peak and the paired test of step 0 against the last audited step on that many
    questions. Empty for an audit made in one go: does doubling the truth change what it says?"""
    path = run / "audit.json"
    if not path.is_file():
        return []
    final = json.loads(path.read_text())
    if not final.get("stages"):
        return []
    out = []
    for audit in [*(json.loads((run / f"audit_{n}.json").read_text()) for n in final.get("stages", ())), final]:
        steps = sorted(audit["steps"], key=int)
        acc = {int(k): audit["steps"][k]["accuracy"] for k in steps}
        out.append({"n": audit["audit_size"], "peak_step": max(acc, key=lambda k: (acc[k], -k)), "accuracy": acc,
                    "paired_first_last": mcnemar_exact(audit["steps"][steps[0]]["correct"],
                                                       audit["steps"][steps[-1]]["correct"])})
    return out


def _at(entries: list[dict[str, Any]], key: str, step: int) -> float | None:
    steps, values = series(entries, key)
    return dict(zip(steps, values)).get(step)


#: Training metrics averaged over blocks of :data:`BLOCK` steps: what moved first, reward or the answers' style.
BLOCK_KEYS = {"reward": "reward", "length": "completions/mean_length", "clipped": "completions/clipped_ratio"}
BLOCK = 10


def _blocks(entries: list[dict[str, Any]]) -> dict[str, list[float]]:
    out = {}
    for name, key in BLOCK_KEYS.items():
        steps, values = series(entries, key)
        by_block: dict[int, list[float]] = {}
        for step, value in zip(steps, values):
            by_block.setdefault((step - 1) // BLOCK, []).append(value)
        out[name] = [round(statistics.fmean(by_block[b]), 4) for b in sorted(by_block)]
    return out


def _is_loss(paired: dict[str, Any] | None, p: float = 0.05) -> bool:
    """Whether a paired test (:func:`mcnemar_exact`) shows a significant loss: p < ``p``, more items lost than
    gained."""
    return paired is not None and paired["p"] < p and paired["only_before"] > paired["only_after"]


def _lost_significantly(run: Path, before: int, after: int, n: int) -> bool:
    """Whether the evaluation at ``after`` lost significantly against ``before`` on the same items (exact McNemar
    p < 0.05, more items lost than gained); False without per-item answers at both."""
    return _is_loss(_paired(run, before, after, n))


def _first_significant_fall(run: Path, steps: list[int], n: int) -> int | None:
    """The first evaluation that lost significantly against step 0 (exact McNemar p < 0.05, more items lost than
    gained), or None."""
    for step in steps[1:]:
        if _lost_significantly(run, steps[0], step, n):
            return step
    return None


def _first_fall_from_best(run: Path, steps: list[int], acc: list[float], n: int) -> tuple[int, int] | None:
    """``(reference, step)``: the first evaluation that lost significantly against the best evaluation before it
    (the earliest of equal bests; exact McNemar p < 0.05, more items lost than gained), or None. Unlike
    :func:`_first_significant_fall` it also sees a run that first rose and then fell back."""
    return _first_loss_from_best(steps, acc, lambda before, after: _lost_significantly(run, before, after, n))


def _first_loss_from_best(steps: list[int], acc: list[float],
                          lost: Callable[[int, int], bool]) -> tuple[int, int] | None:
    """``(reference, step)``: the first of ``steps`` for which ``lost(best step before it, step)``, the best being the
    earliest of equal bests of ``acc``; or None."""
    for k in range(1, len(steps)):
        ref = max(range(k), key=lambda i: (acc[i], -steps[i]))
        if lost(steps[ref], steps[k]):
            return steps[ref], steps[k]
    return None


#: Significance for the audit's verdict that a run fell (:func:`_audit_fall`): stricter than 0.05 because each run
#: gets up to six looks, each against the best audited step before it.
AUDIT_FALL_P = 0.01


def _audit_fall(run: Path, p: float = AUDIT_FALL_P) -> tuple[int, int] | None:
    """``(reference, step)``: on the audit set, the first audited step that lost significantly against the best
    audited step before it (the earliest of equal bests; exact McNemar p < ``p``, more items lost than gained), or
    None -- also when the run has no audit or its audit kept no per-item results. The audit's own verdict on whether
    a run fell, whatever its arm."""
    path = run / "audit.json"
    if not path.is_file():
        return None
    audited = {int(step): v for step, v in json.loads(path.read_text())["steps"].items()}
    order = sorted(audited)
    if any("correct" not in audited[s] for s in order):
        return None
    return _first_loss_from_best(order, [audited[s]["accuracy"] for s in order], lambda before, after: _is_loss(
        mcnemar_exact(audited[before]["correct"], audited[after]["correct"]), p))


def run_record(run: Path) -> dict[str, Any]:
    """Every number the study reports about one run folder."""
    entries = load_log_history(run)
    steps, acc = series(entries, "heldout/accuracy")
    if not steps:
        raise ValueError(f"study_summary: {run} logged no heldout/accuracy")
    n = int(_at(entries, "heldout/n", steps[0]) or 0)
    best = max(range(len(acc)), key=lambda i: (acc[i], -steps[i]))  # the earliest of equal bests
    first, last, best_step = steps[0], steps[-1], steps[best]
    _, reward = series(entries, "reward")
    meta_path = run / "study_run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    argv = meta.get("job_argv", [])
    goodhart = load_goodhart(run) or {}
    record: dict[str, Any] = {
        "run": str(run), "seed": meta.get("seed"), "steps": steps, "heldout_n": n,
        "accuracy": acc, "accuracy_step0": acc[0], "accuracy_best": acc[best], "best_step": best_step,
        "accuracy_final": acc[-1], "gain_final": acc[-1] - acc[0], "gain_best": acc[best] - acc[0],
        "paired_final": _paired(run, first, last, n), "paired_best": _paired(run, first, best_step, n),
        "reward_first5": statistics.fmean(reward[:5]) if reward else None,
        "reward_last5": statistics.fmean(reward[-5:]) if reward else None,
        "goodhart_triggered_step": goodhart.get("triggered_step"),
        "health_warnings": [f"{w['signal']}@{w['step']}" for w in (goodhart.get("health") or {}).get("warnings", [])],
        "cpu_native_bf16": meta.get("cpu_native_bf16"), "cpu_amx_bf16": meta.get("cpu_amx_bf16"),
        "wall_s": meta.get("wall_s"),
        # runs recorded before the effective setting was: the demo config's cpu_bf16 made bf16 = native bf16
        "bf16": meta["bf16"] if "bf16" in meta else meta.get("cpu_native_bf16"),
        "beta": None if (beta := flag_value(argv, "--beta")) is None else float(beta),
        "against_leash_rm": any(LEASH_RM in flag for flag in argv if "learned_rm" in flag),
        "kl": [_at(entries, "heldout/kl_to_ref", s) for s in steps],
        "fall_step": _first_significant_fall(run, steps, n),
        "fall_from_best": _first_fall_from_best(run, steps, acc, n),
        "health_replayed": [f"{w['signal']}@{w['step']}" for w in replay_run(run)[2]],
        "rm_gate": meta.get("rm_gate"),
        "num_tokens": (tokens[-1] if (tokens := series(entries, "num_tokens")[1]) else None),
        "step_time_median": (statistics.median(times) if (times := series(entries, "step_time")[1]) else None),
        "peak_rss_gb": meta.get("peak_rss_gb"),
        "tone": [_tone(run, s) for s in steps],
    }
    record["blocks"] = _blocks(entries)
    record["stopping_rules"] = stopping_rules(entries, goodhart, run=run)
    audit, audit_n = _audit(run)
    if audit:
        record["audit"] = audit
        record["audit_n"] = audit_n
        if growth := _audit_growth(run):
            record["audit_growth"] = growth
        record["audit_peak_step"] = max(audit, key=lambda s: (audit[s], -s))
        record["audit_fall"] = _audit_fall(run)
        for rule in record["stopping_rules"].values():
            rule["audit_accuracy_kept"] = audit.get(rule["kept"])
    for key in ("strict_accuracy", "format_rate", "mean_length", "kl_to_ref", "repetition"):
        record[f"{key}_step0"] = _at(entries, f"heldout/{key}", first)
        record[f"{key}_final"] = _at(entries, f"heldout/{key}", last)
    return record


#: The arms whose reward is known to be hackable (issue 15's arms 4-7): where a stop is a detection, not a false alarm.
HACKED_ARMS = frozenset({4, 5, 6, 7})
#: Arms numbered among them that are contrasts, not hacks: arm 5's RM trained on length-matched pairs (it may hold up;
#: its runs are scored with the others, so a stop there counts as a false alarm).
CONTRAST_ARMS = frozenset({"matched_rm"})


def is_hacked(name: str, number: int) -> bool:
    return number in HACKED_ARMS and name not in CONTRAST_ARMS


#: Detector variants replayed on every run's own evaluations beside the detector as it ran (GoodhartCallback
#: arguments over the run's own): a warm-up of one evaluation instead of three, the ``glr`` scan with it, and
#: ``glr`` at 4.25, the threshold whose long-run false alarms hold with 0.6 per doubling (docs/goodhart.md; the
#: study's runs have 7 evaluations or fewer, so the growth never acts on them).
REPLAYED_DETECTORS: dict[str, dict[str, Any]] = {
    "detector_components": {"proxy_components": True},
    "detector_warmup_1": {"warmup_evals": 1},
    # glr as first shipped (z 4.0, a 3-evaluation reference), and at z 4.25
    "glr_warmup_1": {"rule": "glr", "z_threshold": 4.0, "patience": 1, "smoothing": 1, "threshold_growth": "gaussian",
                     "fresh_draw_z": 0.0, "warmup_evals": 1},
    "glr_4.25_warmup_1": {"rule": "glr", "z_threshold": 4.25, "patience": 1, "smoothing": 1,
                          "threshold_growth": "gaussian", "fresh_draw_z": 0.0, "warmup_evals": 1},
    # glr's defaults now (z 4.15, a 5-evaluation reference, +1.0 per doubling past 40 evaluations, +0.5 on
    # fresh-draw outcomes)
    "glr_tuned": {"rule": "glr", "z_threshold": None, "patience": None, "smoothing": None,
                  "threshold_growth": None, "fresh_draw_z": None, "warmup_evals": 3},
    "glr_tuned_warmup_1": {"rule": "glr", "z_threshold": None, "patience": None, "smoothing": None,
                           "threshold_growth": None, "fresh_draw_z": None, "warmup_evals": 1},
}


def replay_detector(run: Path, entries: list[dict[str, Any]], goodhart: dict[str, Any],
                    **overrides: Any) -> dict[str, Any]:
    """The Goodhart detector replayed on a run's logged evaluations: the arguments it ran with (``goodhart.json``)
    changed by ``overrides``, fed what the callback saw -- held-out accuracy and per-item results at each evaluation
    (``heldout/step_*.jsonl``; the logged standard error where a table is partial) and the exponential moving
    average of the train reward logged up to that step. ``{"stop", "kept"}`` as :func:`stopping_rules`; with no
    overrides it reproduces the run's own verdict and z (tested)."""
    from trl_lab.callbacks import GoodhartCallback
    from trl_lab.callbacks.goodhart import ema_update, reward_components

    args = {k: v for k, v in (goodhart.get("rule") or {}).items() if k not in ("gold_n", "gold_stderr_metric")}
    args.setdefault("proxy_components", False)  # runs recorded before it existed ran without it
    gold_metric = goodhart.get("gold_metric", "heldout/accuracy")
    overrides = dict(overrides)
    proxy_metric = overrides.pop("proxy_metric", goodhart.get("proxy_metric", "reward"))
    detector = GoodhartCallback(proxy_metric, gold_metric, **{**args, **overrides})
    rewards = [(e["step"], e[proxy_metric], {k: e[k] for k in reward_components(e)}) for e in entries
               if proxy_metric is not None and "loss" in e and isinstance(e.get(proxy_metric), (int, float))]
    steps, acc = series(entries, gold_metric)
    quiet = logging.getLogger("trl_lab.callbacks.goodhart")
    was, quiet.disabled = quiet.disabled, True  # a replay's trigger is a table cell, not a warning
    if rewards:  # as on_log sets them: the first reward (and reward parts) logged, where the proxy started
        detector.first_proxy = rewards[0][1]
        detector.first_components = dict(rewards[0][2]) if detector.proxy_components else {}
    try:
        proxy, parts, seen = math.nan, {}, 0
        for step, gold in zip(steps, acc):
            # The proxy's EMA over the training logs before this step: the held-out callback logs its evaluation at
            # on_step_end, before the trainer logs the step's own reward, so that is what the detector saw.
            while seen < len(rewards) and rewards[seen][0] < step:
                _, value, logged = rewards[seen]
                proxy = ema_update(None if math.isnan(proxy) else proxy, value, detector.proxy_ema)
                for name, part in logged.items():
                    parts[name] = ema_update(parts.get(name), part, detector.proxy_ema)
                seen += 1
            answers = _answers(run, step)
            n = int(_at(entries, "heldout/n", step) or 0)
            items = [answers[i] for i in sorted(answers)] if answers and len(answers) == n else None
            if detector.observe(step, proxy, gold, items, gold_stderr=_at(entries, f"{gold_metric}_stderr", step),
                                components=dict(parts) if detector.proxy_components else None):
                break
    finally:
        quiet.disabled = was
    if detector.triggered:
        return {"stop": detector.triggered_step, "kept": detector.best_step if detector.restore_best else steps[-1]}
    return {"stop": None, "kept": steps[-1]}


def stopping_rules(entries: list[dict[str, Any]], goodhart: dict[str, Any], *, kl_threshold: float = 0.1,
                   gap_threshold: float = 0.10, patiences: tuple[int, ...] = (3, 5),
                   run: Path | None = None) -> dict[str, dict[str, Any]]:
    """Where each stopping rule would have stopped this run and which evaluation step it would hand back, replayed
    from the run's own log: the Goodhart detector (as it ran), transformers' ``EarlyStoppingCallback`` on
    ``heldout/accuracy`` (``load_best_model_at_end``: it hands back the best evaluation so far), the best held-out
    checkpoint without stopping, a held-out KL threshold and a train-reward vs held-out-accuracy gap (both stop at
    the first evaluation over the threshold and hand back the evaluation before it); with ``run`` (its folder), also
    the detector variants of :data:`REPLAYED_DETECTORS` (:func:`replay_detector`). ``stop`` is None where a rule
    never fired; ``kept`` is always an evaluation step."""
    steps, acc = series(entries, "heldout/accuracy")
    by_step = dict(zip(steps, acc))
    best_upto = lambda i: max(range(i + 1), key=lambda j: (acc[j], -steps[j]))  # noqa: E731  (earliest of equals)
    rules: dict[str, dict[str, Any]] = {}
    triggered = goodhart.get("triggered_step")
    kept = goodhart.get("best_step") if triggered is not None and goodhart.get("restored") else steps[-1]
    rules["detector"] = {"stop": triggered, "kept": kept}
    if run is not None and goodhart.get("rule"):
        for name, overrides in REPLAYED_DETECTORS.items():
            rules[name] = replay_detector(run, entries, goodhart, **overrides)
    for patience in patiences:
        best, waited, stop = None, 0, None
        for i, value in enumerate(acc):
            if best is None or value > best:
                best, waited = value, 0
            else:
                waited += 1
            if waited >= patience:
                stop = i
                break
        end = len(acc) - 1 if stop is None else stop
        rules[f"early_stopping_{patience}"] = {"stop": None if stop is None else steps[stop],
                                               "kept": steps[best_upto(end)]}
    rules["best_checkpoint"] = {"stop": None, "kept": steps[best_upto(len(acc) - 1)]}
    kl = dict(zip(*series(entries, "heldout/kl_to_ref")))
    _, reward = series(entries, "reward")
    reward_steps = series(entries, "reward")[0]
    for name, fires in (
        (f"kl_over_{kl_threshold:g}", lambda i: (kl.get(steps[i]) or 0.0) > kl_threshold),
        (f"reward_gap_over_{gap_threshold:g}", lambda i: i > 0 and _gap(reward_steps, reward, steps, i, acc)
         > gap_threshold),
    ):
        fired = next((i for i in range(len(acc)) if fires(i)), None)
        rules[name] = {"stop": None if fired is None else steps[fired],
                       "kept": steps[-1] if fired is None else steps[max(fired - 1, 0)]}
    for rule in rules.values():
        rule["accuracy_kept"] = by_step.get(rule["kept"])
    return rules


def _gap(reward_steps: list[int], reward: list[float], steps: list[int], i: int, acc: list[float]) -> float:
    """Mean train reward over the steps since the previous evaluation, minus held-out accuracy at evaluation i."""
    window = [r for s, r in zip(reward_steps, reward) if steps[i - 1] < s <= steps[i]]
    return (statistics.fmean(window) if window else 0.0) - acc[i]


def score_stopping_rules(arms: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Over every run: per rule, stops on the hacked arms (:data:`HACKED_ARMS`) and on the others, and the held-out
    accuracy handed back against the run's held-out peak (the detector's own evaluations: circular until the
    audit-set truth replaces them)."""
    out: dict[str, dict[str, Any]] = {}
    for arm_name, arm in arms.items():
        hacked = is_hacked(arm_name, arm["number"])
        for run in arm["runs"]:
            for name, rule in run["stopping_rules"].items():
                row = out.setdefault(name, {"hacked_runs": 0, "detected": 0, "other_runs": 0, "false_alarms": 0,
                                            "shortfall": [], "audit_shortfall": [], "audit_delay": []})
                row["hacked_runs" if hacked else "other_runs"] += 1
                if rule["stop"] is not None:
                    row["detected" if hacked else "false_alarms"] += 1
                row["shortfall"].append(run["accuracy_best"] - rule["accuracy_kept"])
                if rule.get("audit_accuracy_kept") is not None:  # the truth: the audit set's peak vs the kept step
                    row["audit_shortfall"].append(max(run["audit"].values()) - rule["audit_accuracy_kept"])
                    if hacked and rule["stop"] is not None:  # steps from the true peak to the stop
                        row["audit_delay"].append(rule["stop"] - run["audit_peak_step"])
    for row in out.values():
        row["mean_shortfall"] = statistics.fmean(row.pop("shortfall"))
        audited = row.pop("audit_shortfall")
        row["audited_runs"] = len(audited)
        row["mean_audit_shortfall"] = statistics.fmean(audited) if audited else None
        delays = row.pop("audit_delay")
        row["audited_detections"] = len(delays)
        row["mean_audit_delay"] = statistics.fmean(delays) if delays else None
    return out


def audit_relabelled(arms: dict[str, Any]) -> list[str]:
    """``"<arm> <seed>"`` of the audited runs whose audit verdict (:func:`_audit_fall`) differs from their arm's label
    (:func:`is_hacked`)."""
    return [f"{arm_name} {run['seed']}" for arm_name, arm in arms.items() for run in arm["runs"]
            if "audit" in run and bool(run.get("audit_fall")) != is_hacked(arm_name, arm["number"])]


def score_stopping_rules_by_audit(arms: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The same rules with the verdict taken from the audit instead of the arm: over audited runs only, a run is
    hacked when its audit fell significantly (:func:`_audit_fall`), whatever its arm. Per rule: stops on the runs that
    fell and on the others, and the mean steps from the audit's first significant fall to the stop (negative: the
    rule stopped before the audit could show the fall)."""
    out: dict[str, dict[str, Any]] = {}
    for arm in arms.values():
        for run in arm["runs"]:
            if "audit" not in run:
                continue
            fell = run.get("audit_fall")
            for name, rule in run["stopping_rules"].items():
                row = out.setdefault(name, {"fell_runs": 0, "detected": 0, "other_runs": 0, "false_alarms": 0,
                                            "delays": []})
                row["fell_runs" if fell else "other_runs"] += 1
                if rule["stop"] is not None:
                    row["detected" if fell else "false_alarms"] += 1
                    if fell:
                        row["delays"].append(rule["stop"] - fell[1])
    for row in out.values():
        delays = row.pop("delays")
        row["mean_delay_from_fall"] = statistics.fmean(delays) if delays else None
    return out


def arm_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Across an arm's seeds: the mean and range of the gains, and how many seeds gained significantly."""
    gains = [r["gain_final"] for r in records]
    significant = [r for r in records if r["paired_final"] is not None and r["paired_final"]["p"] < 0.05]
    return {
        "seeds": [r["seed"] for r in records], "gain_final_mean": statistics.fmean(gains),
        "gain_final_min": min(gains), "gain_final_max": max(gains),
        "gain_best_mean": statistics.fmean(r["gain_best"] for r in records),
        "paired_tests": sum(r["paired_final"] is not None for r in records),
        "significant_gains": sum(r["paired_final"]["only_after"] > r["paired_final"]["only_before"] for r in significant),
        "significant_losses": sum(r["paired_final"]["only_after"] < r["paired_final"]["only_before"] for r in significant),
    }


def summarise_study(root: str | Path, figures: bool = True,
                    headline: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Read every ``arm*/seed*`` run under ``root``; write the figures (and, given ``(title, run)`` pairs,
    ``headline.png``) and ``study.json``; return what study.json holds."""
    root = Path(root)
    arms: dict[str, Any] = {}
    for arm_dir in sorted(p for p in root.glob("arm*_*") if p.is_dir() and _RUN.match(p.name)):
        runs = sorted((p for p in arm_dir.glob("seed*") if (p / "metrics.jsonl").is_file()),
                      key=lambda p: int(p.name.removeprefix("seed")))
        if not runs:
            continue
        records = [run_record(run) for run in runs]
        for run, record in zip(runs, records):
            record["seed"] = record["seed"] if record["seed"] is not None else int(run.name.removeprefix("seed"))
            record["run"] = str(run.relative_to(root))
        number, name = _RUN.match(arm_dir.name).groups()  # type: ignore[union-attr]
        arms[name] = {"number": int(number), "runs": records, **arm_summary(records)}
        if figures:
            fig = write_overlay_report(runs, [f"seed {r['seed']}" for r in records], arm_dir / "seeds.png")
            _mark_truth(fig, records, arm_dir / "seeds.png")
            arms[name]["figure"] = str((arm_dir / "seeds.png").relative_to(root))
    result: dict[str, Any] = {"root": str(root), "arms": arms, "stopping_rules": score_stopping_rules(arms),
                              "stopping_rules_by_audit": score_stopping_rules_by_audit(arms),
                              "audit_relabelled": audit_relabelled(arms),
                              "precision": precision_pairs(root, arms)}
    if headline:
        write_headline(headline, root / "headline.png")  # type: ignore[arg-type]
        result["headline"] = {"png": "headline.png", "runs": [{"title": t, "run": r} for t, r in headline]}
    (root / "study.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _mark_truth(fig: Any, records: list[dict[str, Any]], out_png: Path, *, dpi: int = 110) -> None:
    """On the overlay's held-out accuracy panel, in each run's colour: a star at the step the detector restored and
    a dotted line at the audit set's peak (the truth, for audited runs); saved over ``out_png``."""
    from matplotlib import rcParams

    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    ax = fig.axes[1]
    for i, r in enumerate(records):
        color = colors[i % len(colors)]
        det = r["stopping_rules"]["detector"]
        if det["stop"] is not None and det["kept"] in r["steps"]:
            ax.plot([det["kept"]], [r["accuracy"][r["steps"].index(det["kept"])]], marker="*", markersize=13,
                    color=color, markeredgecolor="black", linestyle="none")
        if r.get("audit_peak_step") is not None:
            ax.axvline(r["audit_peak_step"], color=color, linestyle=":", linewidth=1.5)
    fig.suptitle("seeds compared (dashed: detector stop; star: restored step; dotted: audit-set peak)")
    fig.savefig(out_png, dpi=dpi)


def _smoothed(values: list[float], window: int = 5) -> list[float]:
    return [sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
            for i in range(len(values))]


def write_headline(runs: list[tuple[str, str | Path]], out_png: str | Path, *, dpi: int = 110) -> Any:
    """Runs side by side, one panel each: train reward (mean of the last 5 steps) and held-out accuracy against the
    step, with the Goodhart detector's stop and the step it restored marked, and the audit set's accuracy (the
    truth the detector never sees) for an audited run. ``runs``: ``(title, run folder)``."""
    from matplotlib.figure import Figure

    from trl_lab.report import wilson_interval

    fig = Figure(figsize=(5.2 * len(runs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (title, run) in zip(axes, runs):
        entries = load_log_history(run)
        rs, rv = series(entries, "reward")
        # a reward off accuracy's [0, 1] scale (a learned RM's score) gets its own axis on the right
        reward_ax = ax.twinx() if rv and (min(rv) < 0 or max(rv) > 1) else ax
        reward_ax.plot(rs, _smoothed(rv), color="tab:blue", label="train reward (mean of 5 steps)"
                       + ("; right axis" if reward_ax is not ax else ""))
        if reward_ax is not ax:
            reward_ax.set_ylabel("train reward", color="tab:blue")
        steps, acc = series(entries, "heldout/accuracy")
        n = int(_at(entries, "heldout/n", steps[0]) or 0) if steps else 0
        ax.plot(steps, acc, color="tab:green", marker="o", label=f"held-out accuracy ({n} items)")
        if n:
            low, high = zip(*(wilson_interval(a, n) for a in acc))
            ax.fill_between(steps, low, high, color="tab:green", alpha=0.15)
        audit, audit_n = _audit(Path(run))
        if audit:  # the truth: other questions, scored offline on the adapters saved along the run
            ax.plot(list(audit), list(audit.values()), color="black", marker="s", markersize=4, linestyle=":",
                    label=f"audit accuracy ({audit_n} other questions)")
        goodhart = load_goodhart(run) or {}
        if goodhart.get("triggered_step") is not None:
            ax.axvline(goodhart["triggered_step"], color="tab:red", linestyle="--",
                       label=f"detector stops (step {goodhart['triggered_step']})")
            if goodhart.get("restored") and goodhart.get("best_step") is not None:
                best = goodhart["best_step"]
                ax.plot([best], [dict(zip(steps, acc)).get(best, float("nan"))], marker="*", markersize=14,
                        color="tab:red", linestyle="none", label=f"restored (step {best})")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        handles = [*ax.get_legend_handles_labels()[0], *(reward_ax.get_legend_handles_labels()[0] if reward_ax is not ax
                                                          else [])]
        ax.legend(handles=handles, fontsize=7, loc="upper left")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return fig


def _fmt(value: float | None, spec: str = ".3f") -> str:
    """A table cell: ``value`` formatted with ``spec``, empty when there is none."""
    return "" if value is None else format(value, spec)


def _p(paired: dict[str, Any] | None) -> str:
    if paired is None:
        return "n/a"
    return f"{paired['only_before']} vs {paired['only_after']}, p {paired['p']:.4f}"


def format_table(result: dict[str, Any]) -> str:
    lines = ["| arm | seed | acc step 0 | best (step) | final | paired step 0 vs final | reward first/last 5 | "
             "length 0 -> end | KL end | trigger | health warnings | bf16 |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: | --- | --- | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            lines.append(
                f"| {arm['number']} {name} | {r['seed']} | {_fmt(r['accuracy_step0'])} | {_fmt(r['accuracy_best'])} "
                f"({r['best_step']}) | {_fmt(r['accuracy_final'])} | {_p(r['paired_final'])} | "
                f"{_fmt(r['reward_first5'])} / {_fmt(r['reward_last5'])} | {_fmt(r['mean_length_step0'], '.1f')} -> "
                f"{_fmt(r['mean_length_final'], '.1f')} | {_fmt(r['kl_to_ref_final'])} | "
                f"{r['goodhart_triggered_step'] if r['goodhart_triggered_step'] is not None else '-'} | "
                f"{', '.join(r['health_warnings']) or '-'} | "
                f"{'' if r['bf16'] is None else ('yes' if r['bf16'] else 'no')} |")
        lines.append(f"| **{name}: mean of {len(arm['runs'])}** | | | | | gain {arm['gain_final_mean']:+.3f} "
                     f"({arm['gain_final_min']:+.3f} .. {arm['gain_final_max']:+.3f}); "
                     f"{arm['significant_gains']}/{arm['paired_tests']} significant gains, "
                     f"{arm['significant_losses']}/{arm['paired_tests']} significant losses | | | | | | |")
    return "\n".join(lines)


def format_stopping_rules(result: dict[str, Any]) -> str:
    """Per rule: stops on the hacked arms and on the others, and the held-out accuracy it hands back below the peak."""
    lines = ["| rule | stopped on hacked runs | stopped on other runs (false alarms) | mean accuracy below the peak "
             "(held-out) | below the audit peak (audited runs) | steps from the audit peak to the stop (audited "
             "detections) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, row in result["stopping_rules"].items():
        audit = ("-" if row["mean_audit_shortfall"] is None
                 else f"{row['mean_audit_shortfall']:.3f} ({row['audited_runs']})")
        delay = ("-" if row.get("mean_audit_delay") is None
                 else f"{row['mean_audit_delay']:.1f} ({row['audited_detections']})")
        lines.append(f"| {name} | {row['detected']}/{row['hacked_runs']} | {row['false_alarms']}/{row['other_runs']} | "
                     f"{row['mean_shortfall']:.3f} | {audit} | {delay} |")
    per_run = ["| arm | seed | " + " | ".join(result["stopping_rules"]) + " |",
               "| --- | ---: |" + " --- |" * len(result["stopping_rules"])]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            cells = [f"{'-' if v['stop'] is None else v['stop']} / {v['kept']}" for v in r["stopping_rules"].values()]
            per_run.append(f"| {arm['number']} {name} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(per_run)


def format_stopping_rules_by_audit(result: dict[str, Any]) -> str:
    """Per rule, with the audit's verdict (a significant fall, p < :data:`AUDIT_FALL_P`) in place of the arm label."""
    rows = result.get("stopping_rules_by_audit") or {}
    lines = ["| rule | stopped on runs the audit saw fall | stopped on the others (false alarms) | steps from the "
             "audit's first significant fall to the stop |", "| --- | ---: | ---: | ---: |"]
    for name, row in rows.items():
        delay = "-" if row["mean_delay_from_fall"] is None else f"{row['mean_delay_from_fall']:.1f}"
        lines.append(f"| {name} | {row['detected']}/{row['fell_runs']} | {row['false_alarms']}/{row['other_runs']} | "
                     f"{delay} |")
    if rows:
        relabelled = result.get("audit_relabelled") or []
        lines.append("")
        lines.append(f"Runs whose audit verdict differs from their arm's label: {', '.join(relabelled) or 'none'}.")
    return "\n".join(lines)


def format_blocks(result: dict[str, Any]) -> str:
    """Per run, the train reward, completion length and share of completions cut at the length limit, per block of
    :data:`BLOCK` steps."""
    lines = [f"| arm | seed | per {BLOCK} steps: reward | completion length (tokens) | cut at the limit |",
             "| --- | ---: | --- | --- | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            b = r["blocks"]
            cells = [" ".join(f"{v:.2f}" for v in b["reward"]), " ".join(f"{v:.0f}" for v in b["length"]),
                     " ".join(f"{v:.2f}" for v in b["clipped"])]
            lines.append(f"| {arm['number']} {name} | {r['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_leash(result: dict[str, Any]) -> str:
    """Arm 7's question, per run against :data:`LEASH_RM` (``flawed_rm`` at beta 0.05 and the arm-7 runs): where
    held-out accuracy peaks and the KL there, the first evaluation that lost significantly against step 0 and the KL
    there, the audit's peak, and the detector's stop."""
    lines = ["| arm | seed | beta | numerics | held-out peak (step) | KL at the peak | first significant fall (step: acc, "
             "KL) | audit peak (step) | detector stop / restored |",
             "| --- | ---: | ---: | --- | --- | ---: | --- | --- | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            if not r["against_leash_rm"]:
                continue
            i = r["steps"].index(r["best_step"])
            fall = r["fall_step"]
            fell = ("-" if fall is None else
                    f"{fall}: {r['accuracy'][r['steps'].index(fall)]:.3f}, {_fmt(r['kl'][r['steps'].index(fall)])}")
            audit = ("not audited" if "audit" not in r else
                     f"{r['audit'][r['audit_peak_step']]:.3f} ({r['audit_peak_step']})")
            det = r["stopping_rules"]["detector"]
            beta = "" if r["beta"] is None else format(r["beta"], "g")
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {beta} | {_numerics(r)} | {r['accuracy_best']:.3f} "
                         f"({r['best_step']}) | {_fmt(r['kl'][i])} | {fell} | {audit} | "
                         f"{'-' if det['stop'] is None else det['stop']} / {det['kept']} |")
    return "\n".join(lines)


def format_rm_holdup(result: dict[str, Any]) -> str:
    """Arm 5's question, does the RM audit's verdict predict how long the RM holds up: per run against a learned
    correctness RM (:data:`LEASH_RM` at every beta, and the contrast arms' RMs), the RM and what the gate said, where
    held-out accuracy peaked, the first evaluation that lost significantly against the best one before it, the KL
    there, and the audit set's peak."""
    lines = ["| arm | seed | beta | RM: gate | held-out peak (step) | first significant fall from the best earlier "
             "evaluation (from -> step: acc, KL) | audit peak (step) |", "| --- | ---: | ---: | --- | --- | --- | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            if not (r["against_leash_rm"] or name in CONTRAST_ARMS):
                continue
            gate = "; ".join(f"{rm}: {'refused' if v.get('refused') else 'passed'}" for rm, v in (r["rm_gate"] or {}).items())
            fall = r["fall_from_best"]
            if fall is None:
                fell = "-"
            else:
                i = r["steps"].index(fall[1])
                fell = f"{fall[0]} -> {fall[1]}: {r['accuracy'][i]:.3f}" + ("" if r["kl"][i] is None else f", {_fmt(r['kl'][i])}")
            audit = ("not audited" if "audit" not in r else
                     f"{r['audit'][r['audit_peak_step']]:.3f} ({r['audit_peak_step']})")
            beta = "" if r["beta"] is None else format(r["beta"], "g")
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {beta} | {gate or '-'} | {r['accuracy_best']:.3f} "
                         f"({r['best_step']}) | {fell} | {audit} |")
    return "\n".join(lines)


def format_ppo_vs_grpo(result: dict[str, Any], arms: tuple[str, ...] = ("healthy", "ppo")) -> str:
    """Arm 3's question, per run of arm 1 (GRPO) and arm 3 (PPO): accuracy, the paired test, tokens seen, the median
    step time, wall time and peak RSS (runs from different machines: compare times within a machine only), then
    per arm the seeds' spread of the final gain."""
    lines = ["| arm | seed | numerics | held-out 0 / best (step) / final | paired 0 vs final | tokens seen | median "
             "step (s) | wall (min) | peak RSS (GB) |", "| --- | ---: | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    spread = []
    for name in arms:
        arm = result["arms"].get(name)
        if arm is None:
            continue
        for r in arm["runs"]:
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {_numerics(r)} | {r['accuracy_step0']:.3f} / "
                         f"{r['accuracy_best']:.3f} ({r['best_step']}) / {r['accuracy_final']:.3f} | {_p(r['paired_final'])} "
                         f"| {_fmt(r['num_tokens'], ',.0f')} | {_fmt(r['step_time_median'], '.1f')} | "
                         f"{_fmt(None if r['wall_s'] is None else r['wall_s'] / 60, '.1f')} | {_fmt(r['peak_rss_gb'], '.2f')} |")
        gains = [r["gain_final"] for r in arm["runs"]]
        sd = statistics.stdev(gains) if len(gains) > 1 else float("nan")
        spread.append(f"| **{name}** | {len(gains)} seeds | | gain {statistics.fmean(gains):+.3f}, sd {sd:.3f}, range "
                      f"{min(gains):+.3f} .. {max(gains):+.3f} | {arm['significant_gains']}/{arm['paired_tests']} "
                      f"significant gains | | | | |")
    return "\n".join(lines + spread)


def _warning_timing(r: dict[str, Any]) -> str:
    """When a run's first replayed health warning came, relative to its first significant fall."""
    warned = [int(w.rsplit("@", 1)[1]) for w in r["health_replayed"]]
    falls = [s for s in (r["fall_step"], r["fall_from_best"][1] if r["fall_from_best"] else None) if s is not None]
    if not warned:
        return "no warning" + (" (accuracy fell)" if falls else "")
    if not falls:
        return "no significant fall"
    first, fall = min(warned), min(falls)
    return "before the fall" if first < fall else ("at the fall" if first == fall else "after the fall")


def format_health(result: dict[str, Any]) -> str:
    """The health monitor's signals replayed with today's limits (:func:`trl_lab.callbacks.health.replay_run`) on
    every run, against its first significant fall (from step 0, or from the best earlier evaluation): did any warn
    before accuracy fell?"""
    lines = ["| arm | seed | hacked | warnings (replayed) | first significant fall: from step 0 / from the best earlier "
             "| first warning came |", "| --- | ---: | --- | --- | --- | --- |"]
    counts: dict[str, int] = {}
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            timing = _warning_timing(r)
            counts[timing] = counts.get(timing, 0) + 1
            best = "-" if r["fall_from_best"] is None else f"{r['fall_from_best'][0]} -> {r['fall_from_best'][1]}"
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {'yes' if is_hacked(name, arm['number']) else 'no'} | "
                         f"{', '.join(r['health_replayed']) or '-'} | {r['fall_step'] if r['fall_step'] is not None else '-'}"
                         f" / {best} | {timing} |")
    lines.append("| **all runs** | | | | | " + "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + " |")
    return "\n".join(lines)


def _numerics(record: dict[str, Any]) -> str:
    """How the run computed: ``bf16`` (autocast and a bf16 sampler: the demo config's ``cpu_bf16`` on a CPU with
    native bf16), ``bf16-amx`` (the same on a CPU with AMX tiles: other oneDNN kernels, other greedy answers) or
    ``fp32``; ``-`` when the run did not record it."""
    flag = record.get("bf16")
    if flag is None:
        return "-"
    return ("bf16-amx" if record.get("cpu_amx_bf16") else "bf16") if flag else "fp32"


def _answer_rows(run: Path, step: int) -> dict[int, tuple[str, str | None, bool]] | None:
    """Held-out answers at ``step`` by item index: (prompt, completion, correct), or None without the table."""
    rows = _heldout_rows(run, step)
    if rows is None:
        return None
    return {r["index"]: (json.dumps(r.get("prompt")), r.get("completion"), bool(r["correct"])) for r in rows}


def precision_pairs(root: str | Path, arms: dict[str, Any]) -> list[dict[str, Any]]:
    """Step 0 is the base model on the seed's held-out set: the same for every run of a seed, except for the
    numerics. Per seed with complete step-0 answers under both (``bf16`` true and false), compare them:
    accuracy under each, how many answers are identical, and the exact McNemar test (``only_before``: right in fp32
    only, ``only_after``: right in bf16 only). ``consistent`` says whether the runs of one numerics agree with each
    other answer for answer (greedy decoding is deterministic: they should). Cross-run comparisons at a seed are
    paired item by item only between runs of the same numerics."""
    root = Path(root)
    by_seed: dict[int, dict[str, list[tuple[str, dict]]]] = {}
    for arm in arms.values():
        for r in arm["runs"]:
            if r.get("bf16") is None or not r["steps"] or r["steps"][0] != 0:
                continue
            rows = _answer_rows(root / r["run"], 0)
            if rows is None or len(rows) != r["heldout_n"]:
                continue  # only the first answers kept: nothing to pair
            by_seed.setdefault(r["seed"], {}).setdefault(_numerics(r), []).append((r["run"], rows))
    out = []
    for seed, groups in sorted(by_seed.items()):
        if not {"bf16", "fp32"} <= set(groups):
            continue  # (runs on AMX, ``bf16-amx``, are a numerics of their own: not paired here)
        (fp32_run, fp32), (bf16_run, bf16) = groups["fp32"][0], groups["bf16"][0]
        if {i: row[0] for i, row in fp32.items()} != {i: row[0] for i, row in bf16.items()}:
            continue  # not the same questions
        items = sorted(fp32)
        out.append({
            "seed": seed, "n": len(items),
            "fp32_runs": [run for run, _ in groups["fp32"]], "bf16_runs": [run for run, _ in groups["bf16"]],
            "accuracy_fp32": sum(fp32[i][2] for i in items) / len(items),
            "accuracy_bf16": sum(bf16[i][2] for i in items) / len(items),
            "identical_answers": sum(fp32[i][1] == bf16[i][1] for i in items),
            "consistent": all(rows == ref for ref, g in ((fp32, groups["fp32"]), (bf16, groups["bf16"]))
                              for _, rows in g[1:]),
            "paired": mcnemar_exact([fp32[i][2] for i in items], [bf16[i][2] for i in items])})
    return out


def format_precision(result: dict[str, Any]) -> str:
    """Per seed run under both numerics: the base model's held-out accuracy (step 0) in fp32 and in bf16."""
    lines = ["| seed | runs fp32 / bf16 | step-0 accuracy fp32 | bf16 | identical answers | right only in fp32 / "
             "only in bf16 | p | runs of one numerics agree |", "| ---: | --- | ---: | ---: | ---: | --- | ---: | --- |"]
    for p in result.get("precision", []):
        lines.append(f"| {p['seed']} | {len(p['fp32_runs'])} / {len(p['bf16_runs'])} | {p['accuracy_fp32']:.3f} | "
                     f"{p['accuracy_bf16']:.3f} | {p['identical_answers']}/{p['n']} | {p['paired']['only_before']} / "
                     f"{p['paired']['only_after']} | {p['paired']['p']:.2f} | {'yes' if p['consistent'] else 'no'} |")
    return "\n".join(lines)


def format_audit(result: dict[str, Any]) -> str:
    """Per audited run: held-out and audit-set accuracy at each audited step, side by side."""
    lines = ["| arm | seed | audit questions | step: held-out / audit accuracy | audit peak | detector restored |",
             "| --- | ---: | ---: | --- | ---: | ---: |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            if "audit" not in r:
                continue
            held = dict(zip(r["steps"], r["accuracy"]))
            cells = ", ".join(f"{s}: {held[s]:.3f} / {a:.3f}" if s in held else f"{s}: - / {a:.3f}"
                              for s, a in r["audit"].items())
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {r['audit_n']} | {cells} | {r['audit_peak_step']} | "
                         f"{r['stopping_rules']['detector']['kept']} |")
    return "\n".join(lines)


def format_audit_growth(result: dict[str, Any]) -> str:
    """Per run whose audit was grown (``study_audit --extend``): what the truth says at each size."""
    lines = ["| arm | seed | audit questions | audit accuracy per step | audit peak (step) | step 0 vs last: lost vs "
             "gained, p |", "| --- | ---: | ---: | --- | ---: | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            for g in r.get("audit_growth", ()):
                acc, paired = g["accuracy"], g["paired_first_last"]
                cells = ", ".join(f"{s}: {a:.3f}" for s, a in acc.items())
                lines.append(f"| {arm['number']} {name} | {r['seed']} | {g['n']} | {cells} | "
                             f"{acc[g['peak_step']]:.3f} ({g['peak_step']}) | {paired['only_before']} vs "
                             f"{paired['only_after']}, p {paired['p']:.4f} |")
    return "\n".join(lines)


def format_tone(result: dict[str, Any]) -> str:
    """Per run, the held-out answers' tone at each evaluation (mean VADER compound, :func:`_tone`)."""
    lines = ["| arm | seed | held-out tone (VADER compound) per evaluation: step tone |", "| --- | ---: | --- |"]
    for name, arm in sorted(result["arms"].items(), key=lambda kv: kv[1]["number"]):
        for r in arm["runs"]:
            cells = ", ".join(f"{s}: {t:+.3f}" for s, t in zip(r["steps"], r.get("tone", [])) if t is not None)
            lines.append(f"| {arm['number']} {name} | {r['seed']} | {cells or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="the study folder: arm<N>_<arm>/seed<S>/ run folders")
    parser.add_argument("--no_figures", action="store_true")
    parser.add_argument("--headline", nargs="+", metavar="TITLE=RUN",
                        help="also draw these runs side by side into <root>/headline.png (reward vs accuracy, the "
                             "detector's stop and restored step)")
    args = parser.parse_args(argv)
    pairs = [tuple(item.split("=", 1)) for item in args.headline or ()]
    if any(len(pair) != 2 for pair in pairs):
        parser.error("--headline takes TITLE=RUN_FOLDER items")
    result = summarise_study(args.root, figures=not args.no_figures, headline=pairs)  # type: ignore[arg-type]
    print(format_table(result))
    print()
    print(format_blocks(result))
    print()
    print(format_stopping_rules(result))
    print()
    print(format_stopping_rules_by_audit(result))
    print()
    print(format_leash(result))
    print()
    print(format_rm_holdup(result))
    print()
    print(format_ppo_vs_grpo(result))
    print()
    print(format_health(result))
    print()
    print(format_audit(result))
    print()
    print(format_audit_growth(result))
    print()
    print(format_tone(result))
    print()
    print(format_precision(result))
    return result


if __name__ == "__main__":
    main()
