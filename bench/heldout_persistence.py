"""How persistent are real per-item held-out outcomes between evaluations? Measured on the study's runs, fitted
by the simulator's item model, so the Goodhart detector is scored on a suite whose noise is the real one.

Greedy decoding on a fixed held-out set: an item's outcome changes between two checkpoints only when the update
moves it across its decision boundary. The detector's paired statistics live on those changes, so how many items
keep their outcome at each distance (in steps) decides its noise and its power (docs/goodhart.md). Printed:

* ``within``: for each gap in steps, the share of items with the same outcome at two evaluations of one run that
  far apart (pairs of evaluations whose accuracies differ by at most ``--max_acc_diff``, so a genuine drift
  is not counted as persistence noise), mean over pairs;
* ``cross-seed``: the same between two seeds of one arm at the same step (same items, independently trained
  policies): what item difficulty alone keeps, the floor of ``within``;
* the simulator's item model (``trl_lab.testing.goodhart_sim``: difficulty ``N(0, sd)``, latent
  ``sqrt(m) a_i + sqrt(1-m) e_i(t)``, ``e_i`` AR(1) with lag-one correlation ``r`` per step) fitted to both by
  least squares over a grid, and each bench suite's per-evaluation parameters for comparison.

    python bench/heldout_persistence.py [RUN_DIR ...] [--max_acc_diff 0.05]

RUN_DIR holds ``heldout/step_*.jsonl`` (a study run); default: every ``docs/results/study/arm*/seed*`` with at
least 100 held-out items. Seconds of CPU.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from trl_lab.testing.goodhart_sim import kept_share

STUDY = Path(__file__).resolve().parents[1] / "docs" / "results" / "study"


def load_run(run: Path) -> dict[int, np.ndarray]:
    """{step: per-item correctness, items in index order} of one run's held-out evaluations."""
    evals = {}
    for path in sorted((run / "heldout").glob("step_*.jsonl")):
        rows = sorted((json.loads(line) for line in path.open()), key=lambda r: r["index"])
        evals[rows[0]["step"]] = np.array([bool(r["correct"]) for r in rows])
    return evals


def observations(runs: list[Path], max_acc_diff: float) -> tuple[list[tuple[int, float, float]], list[tuple[float, float]]]:
    """(gap in steps, mean accuracy, kept share) within runs; (mean accuracy, kept share) across seeds."""
    within, cross = [], []
    loaded = {run: load_run(run) for run in runs}
    for evals in loaded.values():
        for (s1, x1), (s2, x2) in itertools.combinations(sorted(evals.items()), 2):
            if abs(x1.mean() - x2.mean()) <= max_acc_diff:
                within.append((s2 - s1, float((x1.mean() + x2.mean()) / 2), float((x1 == x2).mean())))
    by_arm = defaultdict(list)
    for run in runs:
        by_arm[run.parent.name].append(loaded[run])
    for seeds in by_arm.values():
        for a, b in itertools.combinations(seeds, 2):
            for step in sorted(set(a) & set(b) - {0}):  # step 0 is the same base model in every seed
                if abs(a[step].mean() - b[step].mean()) <= max_acc_diff:
                    cross.append((float((a[step].mean() + b[step].mean()) / 2), float((a[step] == b[step]).mean())))
    return within, cross


def fit(within, cross) -> list[tuple[float, dict]]:
    """Every grid point, best first: least-squares fit of (difficulty sd, memory m, per-step AR r) to the within and cross-seed shares."""
    gaps = sorted({g for g, _, _ in within})
    accs = lambda values: sorted({round(a * 20) / 20 for a in values})  # accuracies to the nearest 0.05
    acc_levels = accs([a for _, a, _ in within] + [a for a, _ in cross])
    fits = []
    for sd in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        fresh = {a: k[1] for a, k in kept_share(acc_levels, [1], persistence=0.0, difficulty_sd=sd, n_evals=2).items()}
        cross_err = sum((fresh[round(a * 20) / 20] - k) ** 2 for a, k in cross)
        for m in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):
            for r in (0.5, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995):
                sim = kept_share(acc_levels, gaps, persistence=r, item_memory=m, difficulty_sd=sd,
                                 n_evals=max(gaps) + 2)
                err = cross_err + sum((sim[round(a * 20) / 20][g] - k) ** 2 for g, a, k in within)
                fits.append((err, {"difficulty_sd": sd, "item_memory": m, "persistence_per_step": r, "sim": sim,
                                   "fresh": fresh}))
    return sorted(fits, key=lambda f: f[0])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    parser.add_argument("--max_acc_diff", type=float, default=0.05)
    parser.add_argument("--cadence", type=int, default=6, help="steps per evaluation of the calibrated suite")
    args = parser.parse_args(argv)
    runs = args.runs or [r for r in sorted(STUDY.glob("arm*/seed*"))
                         if (evals := load_run(r)) and len(next(iter(evals.values()))) >= 100]
    within, cross = observations(runs, args.max_acc_diff)
    print(f"{len(runs)} runs; {len(within)} within-run pairs and {len(cross)} cross-seed pairs with accuracies "
          f"within {args.max_acc_diff}")
    fits = fit(within, cross)
    n_obs = len(within) + len(cross)
    print("\nbest fits (the data are few: read the spread, not the winner):")
    for err, f in fits[:6]:
        print(f"  difficulty_sd {f['difficulty_sd']}, item_memory {f['item_memory']}, AR {f['persistence_per_step']}"
              f" per step ({f['persistence_per_step'] ** args.cadence:.2f} per {args.cadence} steps): rms error "
              f"{np.sqrt(err / n_obs):.4f}")
    err, best = fits[0]
    sd, m, r = best["difficulty_sd"], best["item_memory"], best["persistence_per_step"]
    print(f"\n{'gap (steps)':>11} | {'pairs':>5} | {'mean acc':>8} | {'real kept':>9} | {'fitted':>6}")
    by_gap = defaultdict(list)
    for g, a, k in within:
        by_gap[g].append((a, k))
    for g, rows in sorted(by_gap.items()):
        fitted = np.mean([best["sim"][round(a * 20) / 20][g] for a, _ in rows])
        print(f"{g:>11} | {len(rows):>5} | {np.mean([a for a, _ in rows]):8.3f} | {np.mean([k for _, k in rows]):9.3f}"
              f" | {fitted:6.3f}")
    if cross:
        fitted = np.mean([best["fresh"][round(a * 20) / 20] for a, _ in cross])
        print(f"{'cross-seed':>11} | {len(cross):>5} | {np.mean([a for a, _ in cross]):8.3f} | "
              f"{np.mean([k for _, k in cross]):9.3f} | {fitted:6.3f}")
    per_eval = r ** args.cadence
    print(f"\nlatent correlation between evaluations l apart (m + (1 - m) r^l), evaluation = {args.cadence} steps:")
    suites = {"fitted (real runs)": (per_eval, m), "persistent": (0.95, 0.0), "persistent+memory 0.5": (0.9, 0.5),
              "persistent+memory 0.8": (0.8, 0.8), "original (fresh draws)": (0.0, 0.0)}
    lags = (1, 2, 4, 8, 13)
    print(f"{'suite':24} | persistence | memory | " + " | ".join(f"l={lag:<3}" for lag in lags))
    for name, (rho, mem) in suites.items():
        print(f"{name:24} | {rho:11.3f} | {mem:6.2f} | " + " | ".join(f"{mem + (1 - mem) * rho**lag:5.2f}"
                                                                      for lag in lags))


if __name__ == "__main__":
    main()
