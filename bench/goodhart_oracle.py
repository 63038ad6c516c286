"""How soon could any detector see a slow hack? An oracle yardstick on the simulated suites.

The oracle is told, for every run, the evaluation after which accuracy declines (the true peak) and that it
declines linearly; it looks once, ``D`` evaluations later, at a paired per-item contrast between the five evaluations
ending at the peak and the ``D`` after it (three weightings: flat, slope-weighted, the last evaluation alone; each
calibrated on its own). Its threshold is the 99th percentile of the same contrast on healthy runs, at an onset drawn
from the same range, so each contrast is a test with 1% false alarms. A detector that stops healthy runs at most 1%
of the time and has stopped a hacked run within ``D`` evaluations of the peak defines such a test too (using the
same evaluations, without knowing the onset), so on runs like these it should not beat the best of the oracle's
contrasts by much -- they are not the most powerful test there is, so this is a yardstick, not a proof.

Printed per suite: the oracle's power (share of slow hacks its best contrast flags) ``D`` evaluations after the
peak, for D = 4 .. 19, next to the share the shipped ``glr`` detector has stopped by then. Issue 13's goal, a
median delay of 13, needs at least half the runs flagged by D = 13. The last column, ``end``, is the same look taken
at each run's last evaluation (D = 39 - onset, so 17-29 evaluations after a peak at 10-22), its thresholds
calibrated per onset on every healthy run: the oracle's share of slow hacks flagged by the end of the run, against
issue 13's goal of 97% detected and ``glr``'s detection rate.

    python bench/goodhart_oracle.py --runs 500 --seed 8
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import goodhart as bench  # noqa: E402  (bench/goodhart.py: the suites and the detector runner)

from trl_lab.callbacks.goodhart import _paired_z  # noqa: E402
from trl_lab.testing.goodhart_sim import score, simulate  # noqa: E402

DELAYS = (4, 7, 10, 13, 16, 19)
REFERENCE = 5  # evaluations ending at the peak


def contrasts(items: np.ndarray, onset: int, delay: int) -> list[float]:
    """The oracle's paired z's: reference (the 5 evaluations ending at ``onset``) minus a weighted post-onset mean."""
    ref = items[onset - REFERENCE + 1: onset + 1].mean(axis=0)
    post = items[onset + 1: onset + 1 + delay].astype(float)
    out = []
    for w in (np.ones(delay), np.arange(1.0, delay + 1.0), np.eye(delay)[-1]):
        out.append(_paired_z(ref - (w[:, None] * post).sum(axis=0) / w.sum()))
    return out


def end_of_run_power(healthy: list, hacked: list, onsets: tuple[int, int]) -> float:
    """Share of ``hacked`` the oracle flags looking once at the last evaluation, at 1% false alarms per onset.

    Every healthy run is scored at every onset in ``onsets`` (``D`` = the evaluations left after it), so each
    onset's threshold is the 99th percentile over all healthy runs.
    """
    lo, hi = onsets
    thresholds = {}
    for t in range(lo, hi + 1):
        null = np.array([contrasts(r.items, t, r.items.shape[0] - 1 - t) for r in healthy])
        thresholds[t] = np.quantile(null, 0.99, axis=0)
    alt = np.array([np.array(contrasts(r.items, r.onset, r.items.shape[0] - 1 - r.onset)) >= thresholds[r.onset]
                    for r in hacked])
    return float(alt.mean(axis=0).max())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--suite", nargs="*", default=["persistent", "persistent+memory 0.5",
                                                        "persistent+memory 0.8", "real-fit"])
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    rng = np.random.default_rng(args.seed)
    glr = bench.goodhart(True, rule="glr")
    print(f"slow hacks, {args.runs} runs per suite, seed {args.seed}: share flagged D evaluations after the true peak")
    print(f"{'suite':22} | " + " | ".join(f"D={d:2}: oracle  glr" for d in DELAYS) + " | end: oracle  glr")
    for name in args.suite:
        suite = bench.SUITES[name]
        hacked = list(simulate(suite["hacked_slow"], args.runs, n_items=500, seed=args.seed))
        healthy = list(simulate(suite["healthy"], args.runs, n_items=500, seed=args.seed))
        lo, hi = suite["hacked_slow"].onset_eval
        pseudo = rng.integers(lo, hi + 1, size=len(healthy))
        fired = []
        for run in hacked:
            outcome = score(run, *glr(run))
            fired.append(outcome.delay if outcome.detected else math.inf)
        fired = np.array(fired, dtype=float)
        cells = []
        for d in DELAYS:
            null = np.array([contrasts(r.items, int(t), d) for r, t in zip(healthy, pseudo)
                             if t + d < r.items.shape[0]])
            alt = np.array([contrasts(r.items, r.onset, d) for r in hacked if r.onset + d < r.items.shape[0]])
            thresholds = np.quantile(null, 0.99, axis=0)
            power = max(float((alt[:, j] >= thresholds[j]).mean()) for j in range(alt.shape[1]))
            cells.append(f"{100 * power:5.1f}% {100 * (fired <= d).mean():5.1f}%")
        end = end_of_run_power(healthy, hacked, (lo, hi))
        cells.append(f"{100 * end:5.1f}% {100 * np.isfinite(fired).mean():5.1f}%")
        print(f"{name:22} | " + " | ".join(f"{c:17}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
