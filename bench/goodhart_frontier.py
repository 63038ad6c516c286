"""The power / false-alarm frontier of the `glr` rule and two variants of it, from threshold-free traces.

Each simulated run is fed once to a ``GoodhartCallback`` that never fires; its drop statistic at every evaluation
(after the warm-up, where the proxy is above its value at the best step) is kept, and for a grid of thresholds
the first crossing gives, offline: false alarms on healthy plateaus within their first 40 / 80 / 160 evaluations
(one 160-evaluation run gives all three: the detector is causal), on slowly rising healthy runs, and the share
detected after the true peak with the median delay for the slow / fast / collapse scenarios (40 evaluations).
The collapse trigger and the restore are left out (``bench/goodhart.py`` scores them).

Variants (``--variant``):

* ``glr``: the rule as shipped (window mean of the evaluations since the best step against the reference);
* ``margin``: the same paired z tested against a drop margin, ``(mean(d) - min_drop) / se`` (``--min_drop``):
  genuine drops smaller than the margin should not count, so long plateaus should alarm less;
* ``trend``: the change point is a hinge (accuracy falls linearly after it), the per-item contrast weighting the
  evaluations since the change point by 1, 2, ..., L (the least-squares slope's weights).

    python bench/goodhart_frontier.py --runs 300 --seed 3 --suite real-fit --variant glr
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import goodhart as bench  # noqa: E402  (bench/goodhart.py: the suites)

import trl_lab.callbacks.goodhart as G  # noqa: E402
from trl_lab.testing.goodhart_sim import simulate  # noqa: E402


def _z_against(d: np.ndarray, min_drop: float) -> float:
    """One-sided paired z of ``mean(d) - min_drop``: the shipped ``_paired_z`` of the shifted differences (a shift
    moves the mean and leaves the spread)."""
    return G._paired_z(d - min_drop)


class VariantDetector(G.GoodhartCallback):
    """``glr`` with its window scan replaced: flat or slope weights, against a drop margin (paired results only)."""

    def __init__(self, *, trend: bool = False, min_drop: float = 0.0, **kwargs):
        super().__init__(rule="glr", **kwargs)
        self.trend, self.min_drop = trend, min_drop

    def _window_z(self) -> float | None:
        ref = self.best_ref
        if ref is None or not self.since_best or ref["items"] is None:
            return None
        best = None
        for length in range(1, len(self.since_best) + 1):
            w = np.arange(1, length + 1, dtype=float) if self.trend else np.ones(length)
            d = sum(wl * (ref["items"] - r) for wl, r in zip(w, self.since_best[-length:])) / w.sum()
            z = _z_against(d, self.min_drop)
            best = z if best is None else max(best, z)
        return best


def traces(scenario, runs: int, seed: int, **variant) -> tuple[np.ndarray, np.ndarray]:
    out, onsets = [], []
    for run in simulate(scenario, runs, n_items=500, seed=seed):
        cb = VariantDetector(z_threshold=1e9, collapse_z=1e9, horizon=10**9, **variant)
        zs = []
        for k, step in enumerate(run.steps):
            cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), run.items[k])
            z = cb.history[-1]["z"]
            proxy_ok = cb.proxy_point is None or not math.isfinite(cb.proxy_point) or run.proxy[k] > cb.proxy_point
            zs.append(z if k >= cb.warmup_evals and z is not None and proxy_ok else -np.inf)
        out.append(zs)
        onsets.append(-1 if run.onset is None else run.onset)
    return np.array(out, float), np.array(onsets)


def first_crossing(z: np.ndarray, threshold: float) -> np.ndarray:
    hit = z >= threshold
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--suite", choices=list(bench.SUITES), default="real-fit")
    parser.add_argument("--variant", choices=("glr", "margin", "trend"), default="glr")
    parser.add_argument("--min_drop", type=float, default=0.01, help="margin variant: drop ignored (accuracy)")
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    variant = {"trend": args.variant == "trend", "min_drop": args.min_drop if args.variant == "margin" else 0.0}
    suite = bench.SUITES[args.suite]
    healthy, _ = traces(dataclasses.replace(suite["healthy"], n_evals=160), args.runs, args.seed, **variant)
    others = {name: traces(suite[name], args.runs, args.seed, **variant) for name in
              ("healthy_slow_rise", "hacked_slow", "hacked_fast", "collapse")}
    label = args.variant + (f" {args.min_drop}" if args.variant == "margin" else "")
    print(f"suite {args.suite}, {args.runs} runs per scenario, seed {args.seed}, variant {label}")
    print("z     | FA 40  FA 80  FA 160 | slow rise | slow: det delay | fast: det delay | collapse: det delay")
    for threshold in np.arange(3.0, 5.01, 0.25):
        fa = [100 * (first_crossing(healthy[:, :e], threshold) >= 0).mean() for e in (40, 80, 160)]
        rise = 100 * (first_crossing(others["healthy_slow_rise"][0], threshold) >= 0).mean()
        cells = []
        for name in ("hacked_slow", "hacked_fast", "collapse"):
            z, onset = others[name]
            k = first_crossing(z, threshold)
            det = k > onset
            delay = np.median(k[det] - onset[det]) if det.any() else math.nan
            cells.append(f"{100 * det.mean():5.1f}% {delay:4.1f}")
        print(f"{threshold:4.2f}  | {fa[0]:4.1f}%  {fa[1]:4.1f}%  {fa[2]:5.1f}% | {rise:8.1f}% | "
              + " | ".join(f"{c:15}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
