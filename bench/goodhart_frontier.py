"""The power / false-alarm frontier of the `glr` rule and two variants of it, from threshold-free traces.

Each simulated run is fed once to a ``GoodhartCallback`` that never fires; its drop statistic at every evaluation
(after the warm-up, where the proxy is above its value at the best step) is kept, and for a grid of thresholds
the first crossing gives, offline: false alarms on healthy plateaus within their first 40 / 80 / 160 evaluations
(one 160-evaluation run gives all three: the detector is causal), on slowly rising healthy runs, and the share
detected after the true peak with the median delay for the slow / fast / collapse scenarios (40 evaluations).
The collapse trigger and the restore are left out (``bench/goodhart.py`` scores them).

``--growth G ...`` also prints, per threshold ``z``, the false alarms of a threshold that grows by ``G`` per doubling
of the evaluations beyond the 40th (``z + G log2(k / 40)`` at the ``k``-th; the scenarios with a peak run 40
evaluations, so only the long healthy plateaus see it): how fast must it grow to hold the 40-evaluation rate?
``--warmup`` sets the evaluations before the first stop (the detector's ``warmup_evals``, default 3).

Variants (``--variant``):

* ``glr``: the rule as shipped (window mean of the evaluations since the best step against the reference);
* ``margin``: the same paired z tested against a drop margin, ``(mean(d) - min_drop) / se`` (``--min_drop``):
  genuine drops smaller than the margin should not count, so long plateaus should alarm less;
* ``--lookback L`` (with any variant): the best step is sought among the last ``L`` evaluations only, so the
  reference is not the maximum of an ever longer run (a bounded winner's curse);
* ``trend``: the change point is a hinge (accuracy falls linearly after it), the per-item contrast weighting the
  evaluations since the change point by 1, 2, ..., L (the least-squares slope's weights).

    python bench/goodhart_frontier.py --runs 300 --seed 3 --suite real-fit --variant glr
    python bench/goodhart_frontier.py --runs 300 --seed 4 --suite real-fit --warmup 1 --growth 0.2 0.4 0.6
    python bench/goodhart_frontier.py --runs 300 --seed 4 --suite real-fit --growth 0.8 --z 4.0 4.15 4.25

``--smoothing`` defaults to the ``glr`` rule's (2 since 2026-12-07); outputs made before then used 1.
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

    def __init__(self, *, trend: bool = False, min_drop: float = 0.0, lookback: int | None = None, **kwargs):
        super().__init__(rule="glr", **kwargs)
        self.trend, self.min_drop, self.lookback = trend, min_drop, lookback
        self._candidates: list[dict] = []  # lookback: finalized evaluations within the look-back, with their refs
        self._rows: list[np.ndarray | None] = []  # lookback: every evaluation's per-item results

    def observe(self, step, proxy, gold, gold_items=None, **kwargs):
        if self.lookback is not None:
            self._rows.append(None if gold_items is None else np.asarray(gold_items, dtype=np.float64))
        return super().observe(step, proxy, gold, gold_items, **kwargs)

    def _finalize(self, index: int) -> None:
        """lookback: the best step is the best of the last ``lookback`` finalized evaluations, not of all."""
        if self.lookback is None:
            return super()._finalize(index)
        if index < 0:
            return
        self.best_gold = None  # the parent then always takes ``index`` as the best: read its reference back
        super()._finalize(index)
        entry = self.history[index]
        self._candidates.append({"index": index, "step": entry["step"], "smoothed": entry["smoothed"],
                                 "proxy": entry["proxy"], "ref": self.best_ref})
        self._candidates = [c for c in self._candidates if c["index"] > index - self.lookback]
        best = max(self._candidates, key=lambda c: (c["smoothed"], -c["index"]))
        self.best_step, self.best_gold, self.proxy_point, self.best_ref = (best["step"], best["smoothed"],
                                                                           best["proxy"], best["ref"])
        self.since_best = self._rows[best["index"] + 1:]
        self.since_best_se = [e["se"] for e in self.history[best["index"] + 1:]]

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


def traces(scenario, runs: int, seed: int, warmup: int = 3, **variant) -> tuple[np.ndarray, np.ndarray]:
    out, onsets = [], []
    for run in simulate(scenario, runs, n_items=500, seed=seed):
        cb = VariantDetector(z_threshold=1e9, collapse_z=1e9, horizon=10**9, warmup_evals=warmup, **variant)
        zs = []
        for k, step in enumerate(run.steps):
            cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), run.items[k])
            z = cb.history[-1]["z"]
            proxy_ok = cb.proxy_point is None or not math.isfinite(cb.proxy_point) or run.proxy[k] > cb.proxy_point
            zs.append(z if k >= cb.warmup_evals and z is not None and proxy_ok else -np.inf)
        out.append(zs)
        onsets.append(-1 if run.onset is None else run.onset)
    return np.array(out, float), np.array(onsets)


def first_crossing(z: np.ndarray, threshold: float | np.ndarray) -> np.ndarray:
    """Per run (row), the first evaluation whose statistic reaches the threshold (one value, or one per
    evaluation), -1 for none."""
    hit = z >= threshold
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def grown_threshold(threshold: float, growth: float, evaluations: int, horizon: int = 40) -> np.ndarray:
    """The threshold at the 1st..``evaluations``-th evaluation, ``threshold`` up to ``horizon`` and ``growth`` more
    per doubling after."""
    k = np.arange(1, evaluations + 1, dtype=float)
    return threshold + growth * np.log2(np.maximum(k, horizon) / horizon)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--suite", choices=list(bench.SUITES), default="real-fit")
    parser.add_argument("--variant", choices=("glr", "margin", "trend"), default="glr")
    parser.add_argument("--min_drop", type=float, default=0.01, help="margin variant: drop ignored (accuracy)")
    parser.add_argument("--z", type=float, nargs="*", default=None,
                        help="thresholds to print (default 3.0, 3.25, ..., 5.0)")
    parser.add_argument("--smoothing", type=int, default=None,
                        help="the detector's smoothing (reference window 2s+1; default: the glr rule's, 2)")
    parser.add_argument("--lookback", type=int, default=None,
                        help="the best step is sought among the last this many evaluations only (default: all)")
    parser.add_argument("--warmup", type=int, default=3, help="evaluations before the first stop (warmup_evals)")
    parser.add_argument("--growth", type=float, nargs="*", default=[],
                        help="also print the false alarms of thresholds growing this much per doubling beyond 40")
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    variant = {"trend": args.variant == "trend", "min_drop": args.min_drop if args.variant == "margin" else 0.0,
               "lookback": args.lookback, "smoothing": args.smoothing}
    suite = bench.SUITES[args.suite]
    healthy, _ = traces(dataclasses.replace(suite["healthy"], n_evals=160), args.runs, args.seed, args.warmup,
                        **variant)
    others = {name: traces(suite[name], args.runs, args.seed, args.warmup, **variant) for name in
              ("healthy_slow_rise", "hacked_slow", "hacked_fast", "collapse") if name in suite}  # original: no rise
    label = args.variant + (f" {args.min_drop}" if args.variant == "margin" else "") + (
        f", look-back {args.lookback}" if args.lookback else "") + (
        f", smoothing {args.smoothing}" if args.smoothing is not None else "")
    print(f"suite {args.suite}, {args.runs} runs per scenario, seed {args.seed}, variant {label}, "
          f"warm-up {args.warmup}")
    print("z     | FA 40  FA 80  FA 160 | slow rise | slow: det delay | fast: det delay | collapse: det delay")
    grid = args.z or list(np.arange(3.0, 5.01, 0.25))
    for threshold in grid:
        fa = [100 * (first_crossing(healthy[:, :e], threshold) >= 0).mean() for e in (40, 80, 160)]
        rise = (100 * (first_crossing(others["healthy_slow_rise"][0], threshold) >= 0).mean()
                if "healthy_slow_rise" in others else math.nan)
        cells = []
        for name in ("hacked_slow", "hacked_fast", "collapse"):
            z, onset = others[name]
            k = first_crossing(z, threshold)
            det = k > onset
            delay = np.median(k[det] - onset[det]) if det.any() else math.nan
            cells.append(f"{100 * det.mean():5.1f}% {delay:4.1f}")
        print(f"{threshold:4.2f}  | {fa[0]:4.1f}%  {fa[1]:4.1f}%  {fa[2]:5.1f}% | {rise:8.1f}% | "
              + " | ".join(f"{c:15}" for c in cells), flush=True)
    if args.growth:
        print("\nfalse alarms on healthy plateaus, threshold z up to 40 evaluations, then + growth per doubling")
        print("z     | " + " | ".join(f"growth {g:4.2f}: FA 80  FA 160" for g in args.growth))
        for threshold in args.z or np.arange(3.5, 5.01, 0.25):
            cells = []
            for g in args.growth:
                fa = [100 * (first_crossing(healthy[:, :e], grown_threshold(threshold, g, e)) >= 0).mean()
                      for e in (80, 160)]
                cells.append(f"{'':13}{fa[0]:4.1f}%  {fa[1]:5.1f}%")
            print(f"{threshold:4.2f}  | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
