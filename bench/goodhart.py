"""GoodhartCallback's rules vs simpler baselines on simulated noisy runs, side by side, over several suites.

Every detector sees the same runs from :mod:`trl_lab.testing.goodhart_sim` (n=500 held-out items per evaluation):

* ``original``: the first simulator: 40-45 evaluations; healthy runs rise then plateau; hacked runs peak at
  evaluation 8-20 then decline 0.75-1.5 (slow) or 2.5-5 (fast) points/eval; collapses of 15-40 points; every item
  drawn afresh at every evaluation;
* ``persistent``: issue 13's suite: 40 evaluations; healthy runs that plateau or rise slowly; peaks at 10-22, then
  0.4 (slow) or 1 (fast) point/eval; 15-point collapses; per-item outcomes that persist between evaluations
  (latent AR(1), lag-one correlation 0.95: on it the old rule gives about what issue 13 measured);
* ``persistent+memory``: the same curves with part of each item's latent fixed for the whole run
  (``item_memory`` 0.5, AR 0.9; and 0.8, AR 0.8): outcomes that stay correlated at every lag;
* ``real-fit``: the same curves with the item model fitted to the study's real runs by
  ``bench/heldout_persistence.py`` (memory 0.5, AR 0.26 per evaluation, difficulty sd 0.75).

Columns:

* healthy: ``FA``, the share of healthy runs stopped (goal <= 1%), with its 95% Wilson interval;
* others: ``det``, the share stopped after the true peak (goal >= 97% slow); ``early``, stopped at or before it;
  ``delay``, median evaluations from the true peak to the stop (goals: slow <= 13, fast <= 7, collapse <= 3);
  ``regret``, true accuracy at the true peak minus at the step restored, in points, mean/95th percentile over
  detected runs (goal: mean <= 1).

Detectors: ``GoodhartCallback`` with the ``glr`` rule (the default; also without its fresh-draw threshold,
``fresh_draw_z=0``, and as first shipped) and the ``paired_z`` rule (the default until 2026-12-07),
each on per-item results and on the accuracy alone (binomial SE); a noise-scaled peak-drop baseline (stop when
accuracy is ``c`` standard errors of a difference below the highest accuracy seen, restore that one);
transformers' ``EarlyStoppingCallback`` (the real class driven with a fake TrainerState/TrainerControl, restoring
the highest raw accuracy, as ``load_best_model_at_end`` does).

    python bench/goodhart.py [--runs 1000] [--items 500] [--seed 0] [--suite NAME ...]
    python bench/goodhart.py --long --runs 300    # false alarms on healthy plateaus of 40 / 80 / 160 evaluations
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from trl_lab.callbacks import GoodhartCallback
from trl_lab.testing.goodhart_sim import SCENARIOS, Outcome, Scenario, SimRun, persistent_suite, score, simulate

SUITES: dict[str, dict[str, Scenario]] = {
    "original": SCENARIOS,
    "persistent": persistent_suite(0.95),
    "persistent+memory 0.5": persistent_suite(0.9, item_memory=0.5),
    "persistent+memory 0.8": persistent_suite(0.8, item_memory=0.8),
    # fitted to the study's real runs by bench/heldout_persistence.py (evaluation = 6 steps)
    "real-fit": persistent_suite(0.26, item_memory=0.5, difficulty_sd=0.75),
}

#: ``glr`` as first shipped (z 4.0, a 3-evaluation reference, the Gaussian-tail growth); its defaults are now z 4.15,
#: a 5-evaluation reference and +1.0 per doubling past 40 evaluations (docs/goodhart.md)
GLR_FIRST = {"rule": "glr", "z_threshold": 4.0, "smoothing": 1, "threshold_growth": "gaussian", "fresh_draw_z": 0.0}

Detector = Callable[[SimRun], tuple[int | None, int | None]]  # run -> (fired at, restored evaluation)


def goodhart(paired: bool, **kwargs) -> Detector:
    """A GoodhartCallback fed per-item results (``paired``) or only accuracy with a binomial SE."""

    def detect(run: SimRun) -> tuple[int | None, int | None]:
        cb = GoodhartCallback(**kwargs) if paired else GoodhartCallback(gold_n=run.items.shape[1], **kwargs)
        for k, step in enumerate(run.steps):
            items = run.items[k] if paired else None
            if cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), items):
                return k, int(np.searchsorted(run.steps, cb.best_step))
        return None, None

    return detect


def peak_drop(c: float) -> Detector:
    """Stop when accuracy is ``c`` standard errors of a difference (binomial, unpaired) below its highest value."""

    def detect(run: SimRun) -> tuple[int | None, int | None]:
        n = run.items.shape[1]
        best = 0
        for k, gold in enumerate(run.gold):
            if gold > run.gold[best]:
                best = k
            se = math.sqrt(run.gold[best] * (1 - run.gold[best]) / n + gold * (1 - gold) / n)
            if k >= 3 and run.gold[best] - gold >= c * se and run.proxy[k] > run.proxy[best]:
                return k, best
        return None, None

    return detect


def early_stopping(patience: int) -> Detector:
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    args = SimpleNamespace(metric_for_best_model="accuracy", greater_is_better=True)

    def detect(run: SimRun) -> tuple[int | None, int | None]:
        cb, state, control = EarlyStoppingCallback(early_stopping_patience=patience), TrainerState(), TrainerControl()
        best = None
        for k, gold in enumerate(run.gold):
            cb.on_evaluate(args, state, control, metrics={"eval_accuracy": float(gold)})
            if state.best_metric is None or gold > state.best_metric:  # Trainer._determine_best_metric
                state.best_metric, best = float(gold), k
            if control.should_training_stop:
                return k, best
        return None, None

    return detect


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarise(outcomes: list[Outcome], healthy: bool) -> str:
    n = len(outcomes)
    if healthy:
        fa = sum(o.fired for o in outcomes)
        lo, hi = wilson(fa, n)
        return f"{100 * fa / n:5.1f}% [{100 * lo:.1f},{100 * hi:.1f}]"
    det = [o for o in outcomes if o.detected]
    early = sum(o.early for o in outcomes)
    delay = f"{np.median([o.delay for o in det]):4.1f}" if det else "   -"
    reg = [100 * o.regret for o in det if o.regret is not None]
    regret = f"{np.mean(reg):4.2f}/{np.percentile(reg, 95):4.2f}" if reg else "   -/-   "
    return f"{100 * len(det) / n:5.1f}% {100 * early / n:5.1f}% {delay} {regret}"


def long_runs(runs: int, items: int, seed: int) -> None:
    """False alarms on healthy plateaus of 40 / 80 / 160 evaluations, per rule, with and without the rising threshold."""
    for suite in ("original", "persistent", "real-fit"):
        for n_evals in (40, 80, 160):
            scenario = dataclasses.replace(SUITES[suite]["healthy"], n_evals=n_evals)
            sims = list(simulate(scenario, runs, n_items=items, seed=seed))
            cells = []
            rules = (("paired_z", {"rule": "paired_z"}), ("glr", {"rule": "glr"}), ("glr first", GLR_FIRST))
            for rule, kwargs in rules:
                for horizon, label in ((40, "40"), (10**9, "none")):
                    detect = goodhart(True, **{**kwargs, "horizon": horizon})
                    fa = summarise([score(run, *detect(run)) for run in sims], healthy=True)
                    cells.append(f"{rule} horizon {label}: {fa}")
            print(f"{suite:10} {n_evals:3} evaluations | " + " | ".join(cells), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suite", nargs="*", choices=list(SUITES), default=list(SUITES))
    parser.add_argument("--z", type=float, default=None, help="z_threshold of the glr rule (default: its default)")
    parser.add_argument("--long", action="store_true", help="only false alarms on longer healthy runs")
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    if args.long:
        long_runs(args.runs, args.items, args.seed)
        return

    detectors: dict[str, Detector] = {
        "glr, per-item (default)": goodhart(True, rule="glr", z_threshold=args.z),
        "glr without fresh-draw z, per-item": goodhart(True, rule="glr", z_threshold=args.z, fresh_draw_z=0.0),
        "glr first (z 4.0, 3-eval ref), per-item": goodhart(True, **GLR_FIRST),
        "glr, accuracy + binomial SE": goodhart(False, rule="glr", z_threshold=args.z),
        "paired_z, per-item": goodhart(True, rule="paired_z"),
        "paired_z, accuracy + binomial SE": goodhart(False, rule="paired_z"),
        "peak-drop c=3": peak_drop(3.0),
        "EarlyStopping patience=10": early_stopping(10),
    }
    width = max(map(len, detectors))
    for suite_name in args.suite:
        suite = SUITES[suite_name]
        t0 = time.perf_counter()
        cells: dict[str, dict[str, str]] = {name: {} for name in detectors}
        for scenario in suite.values():
            runs = list(simulate(scenario, args.runs, n_items=args.items, seed=args.seed))
            for name, detect in detectors.items():
                outcomes = [score(run, *detect(run)) for run in runs]
                cells[name][scenario.name] = summarise(outcomes, healthy=scenario.kind == "healthy")
        print(f"\n== suite {suite_name}: {args.runs} runs per scenario, {args.items} items per evaluation, seed "
              f"{args.seed} ({time.perf_counter() - t0:.0f} s)")
        names = [sc.name for sc in suite.values()]
        widths = [21 if sc.kind == "healthy" else 27 for sc in suite.values()]
        header = f"{'detector':{width}} | " + " | ".join(f"{n:{w}}" for n, w in zip(names, widths))
        print(header)
        print("-" * len(header))
        for name in detectors:
            print(f"{name:{width}} | " + " | ".join(f"{cells[name][n]:{w}}" for n, w in zip(names, widths)))
    print("\ncells: healthy = FA [95% CI]; others = det early delay regret(mean/p95, points)")
    print("goals: FA <= 1%; slow det >= 97%, median delay <= 13; fast <= 7; collapse <= 3; mean regret <= 1 point")


if __name__ == "__main__":
    main()
