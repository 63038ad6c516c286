"""Where ``GoodhartCallback.change_ratio`` lies on each simulated suite and on the study's real runs.

The ratio (items changed since the previous evaluation over the mean changed at lags 2-4) decides how much of
``fresh_draw_z`` the ``glr`` threshold adds (``FRESH_DRAW_RAMP``: none at or below 0.85, all at or above 0.95). This
prints its 1st / 5th / 50th / 95th / 99th percentiles at the 3rd, 5th, 10th, 20th and 40th evaluation of healthy runs
per suite (fresh draws should sit near 1, persistent outcomes well below), then the ratio at the last evaluation of
every committed study run with per-item held-out results (``docs/results/study/arm*/seed*/heldout/``).

    python bench/change_ratio.py --runs 300 --seed 7
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import goodhart as bench  # noqa: E402  (bench/goodhart.py: the suites)

from trl_lab.callbacks import GoodhartCallback  # noqa: E402
from trl_lab.callbacks.goodhart import FRESH_DRAW_RAMP  # noqa: E402
from trl_lab.testing.goodhart_sim import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
AT = (3, 5, 10, 20, 40)


def ratios(rows) -> list[float]:
    """The detector's change ratio after each evaluation of ``rows`` (per-item results), NaN while unknown."""
    cb = GoodhartCallback(rule="glr")
    out = []
    for k, row in enumerate(rows):
        cb.observe(k, float(k), float(np.mean(row)), row)
        out.append(np.nan if cb.change_ratio is None else cb.change_ratio)
    return out


def study_runs(root: Path):
    for run in sorted(root.glob("docs/results/study/arm*/seed*")):
        tables = sorted((run / "heldout").glob("step_*.jsonl"))
        rows = []
        for table in tables:
            answers = {r["index"]: bool(r["correct"]) for r in map(json.loads, table.read_text().splitlines())}
            rows.append([answers[i] for i in sorted(answers)])
        if len(rows) >= 3 and len({len(r) for r in rows}) == 1:
            steps = [int(t.stem.split("_")[1]) for t in tables]
            yield run.relative_to(root / "docs/results/study"), steps[1] - steps[0], rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    print(f"change ratio on healthy runs ({args.runs} per suite, 500 items, seed {args.seed}); the ramp is "
          f"{FRESH_DRAW_RAMP}: percentiles 1 / 5 / 50 / 95 / 99 at evaluation k")
    for name, suite in bench.SUITES.items():
        r = np.array([ratios(run.items) for run in simulate(suite["healthy"], args.runs, 500, seed=args.seed)])
        cells = [f"k={k}: " + " ".join(f"{q:.2f}" for q in np.nanpercentile(r[:, k - 1], [1, 5, 50, 95, 99]))
                 for k in AT if k <= r.shape[1]]
        print(f"{name:22} | " + " | ".join(cells), flush=True)
    print("\nstudy runs (greedy held-out answers; a genuine fall of accuracy lowers the ratio too): at the last "
          "evaluation")
    finals = []
    for run, gap, rows in study_runs(ROOT):
        r = ratios(rows)
        finals.append(r[-1])
        print(f"{str(run):32} evaluations {len(rows)} ({gap:2} steps apart): {r[-1]:.3f}")
    finals = np.array(finals)
    lo, hi = FRESH_DRAW_RAMP
    print(f"{len(finals)} runs: median {np.median(finals):.3f}, range {finals.min():.3f}-{finals.max():.3f}; "
          f"{(finals > lo).sum()} above {lo} (some of the bump), {(finals >= hi).sum()} at or above {hi} (all of it)")


if __name__ == "__main__":
    main()
