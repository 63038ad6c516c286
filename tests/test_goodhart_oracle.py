"""bench/goodhart_oracle.py (the known-onset yardstick) and bench/change_ratio.py (where the fresh-draw ramp sits)."""

import numpy as np
import pytest

from tests.helpers import load_bench
from trl_lab.callbacks.goodhart import _paired_z


def test_oracle_contrasts_are_paired_z_of_the_reference_against_weighted_post_means():
    oracle = load_bench("goodhart_oracle")
    rng = np.random.default_rng(0)
    items = rng.random((12, 300)) < 0.5
    items[7:, :60] = False  # 60 items lost after evaluation 6
    flat, slope, last = oracle.contrasts(items, onset=6, delay=4)
    ref = items[2:7].mean(axis=0)
    assert flat == pytest.approx(_paired_z(ref - items[7:11].mean(axis=0)))
    assert last == pytest.approx(_paired_z(ref - items[10]))
    assert flat > 3 and slope > 3 and last > 2  # a drop of about 10 points is plain to every contrast


def test_oracle_bench_runs_small(capsys):
    oracle = load_bench("goodhart_oracle")
    oracle.main(["--runs", "12", "--suite", "real-fit"])
    out = capsys.readouterr().out
    assert "real-fit" in out and out.count("%") == 2 * (len(oracle.DELAYS) + 1)


def test_change_ratio_bench_reads_the_shipped_ratio_and_the_study_runs(capsys):
    bench = load_bench("change_ratio")
    rng = np.random.default_rng(1)
    fresh = rng.random((10, 2000)) < 0.3
    assert np.isnan(bench.ratios(fresh)[1]) and bench.ratios(fresh)[-1] == pytest.approx(1.0, abs=0.05)
    bench.main(["--runs", "3"])
    out = capsys.readouterr().out
    assert "real-fit" in out and "arm4_verbosity/seed44" in out and "runs: median" in out
