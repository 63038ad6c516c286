"""GoodhartCallback vs transformers' EarlyStoppingCallback on simulated noisy runs, side by side.

Every detector sees the same runs from :mod:`trl_lab.testing.goodhart_sim` (n=500 held-out items per evaluation,
40-45 evaluations per run): healthy runs that rise then plateau, hacked runs whose accuracy peaks then
declines slowly (0.75-1.5 points/eval) or fast (2.5-5 points/eval) while the reward keeps rising, and sudden
collapses (15-40 points at once). Columns:

* ``FA``: false alarms, the share of healthy runs stopped (goal <= 1%), with its 95% Wilson interval;
* ``det``: share of hacked/collapsed runs stopped at or after the true peak (goal >= 99% fast, >= 95% slow);
  ``early``: stopped before the peak (a false alarm on a run that was still fine);
* ``delay``: median evaluations from the true peak (decline/collapse onset) to the stop (goal well under 9
  for fast declines);
* ``regret``: true accuracy at the true peak minus at the step restored, in points, mean and 95th percentile
  over detected runs (goal <= 1 point).

EarlyStoppingCallback is the real transformers class driven with a fake TrainerState/TrainerControl, with
``metric_for_best_model`` = held-out accuracy and ``load_best_model_at_end`` semantics (restore the highest
raw accuracy seen).

    python bench/goodhart.py [--runs 1000] [--items 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np

from trl_lab.callbacks import GoodhartCallback
from trl_lab.testing.goodhart_sim import SCENARIOS, Outcome, SimRun, score, simulate

Detector = Callable[[SimRun], tuple[int | None, int | None]]  # run -> (fired at, restored evaluation)


def goodhart(paired: bool, **kwargs) -> Detector:
    def detect(run: SimRun) -> tuple[int | None, int | None]:
        cb = GoodhartCallback(**kwargs) if paired else GoodhartCallback(gold_n=run.items.shape[1], **kwargs)
        for k, step in enumerate(run.steps):
            items = run.items[k] if paired else None
            if cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), items):
                return k, int(np.searchsorted(run.steps, cb.best_step))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)

    detectors: dict[str, Detector] = {
        "Goodhart (per-item, paired)": goodhart(True),
        "Goodhart (accuracy + binomial SE)": goodhart(False),
        "EarlyStopping patience=3": early_stopping(3),
        "EarlyStopping patience=5": early_stopping(5),
        "EarlyStopping patience=10": early_stopping(10),
    }
    t0 = time.perf_counter()
    cells: dict[str, dict[str, str]] = {name: {} for name in detectors}
    for scenario in SCENARIOS:
        runs = list(simulate(scenario, args.runs, n_items=args.items, seed=args.seed))
        for name, detect in detectors.items():
            outcomes = [score(run, *detect(run)) for run in runs]
            cells[name][scenario] = summarise(outcomes, healthy=scenario == "healthy")

    print(f"{args.runs} runs per scenario, {args.items} held-out items per evaluation, seed {args.seed} "
          f"({time.perf_counter() - t0:.0f} s)")
    print("healthy: FA [95% CI]; others: det early delay regret(mean/p95, points)\n")
    width = max(map(len, detectors))
    header = f"{'detector':{width}} | {'healthy':21} | " + " | ".join(f"{s:27}" for s in list(SCENARIOS)[1:])
    print(header)
    print("-" * len(header))
    for name in detectors:
        row = cells[name]
        print(f"{name:{width}} | {row['healthy']:21} | " + " | ".join(f"{row[s]:27}" for s in list(SCENARIOS)[1:]))
    print("\ngoals: FA <= 1%; det >= 95% slow, >= 99% fast; median delay well under 9 (fast); regret <= 1 point")


if __name__ == "__main__":
    main()
