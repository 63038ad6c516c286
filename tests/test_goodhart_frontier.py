"""bench/goodhart_frontier.py: its glr variant is the shipped rule, and its traces give the false alarms it prints."""

import numpy as np

from tests.helpers import load_bench
from trl_lab.callbacks import GoodhartCallback
from trl_lab.testing.goodhart_sim import persistent_suite, simulate


def _bench():
    return load_bench("goodhart_frontier")


def test_flat_variant_is_the_shipped_glr_scan():
    bench = _bench()
    run = next(iter(simulate(persistent_suite(0.26, item_memory=0.5)["hacked_slow"], 1, n_items=200, seed=5)))
    shipped = GoodhartCallback(rule="glr", z_threshold=1e9, collapse_z=1e9)
    variant = bench.VariantDetector(z_threshold=1e9, collapse_z=1e9)
    for k, step in enumerate(run.steps):
        for cb in (shipped, variant):
            cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), run.items[k])
    zs = [(a["z"], b["z"]) for a, b in zip(shipped.history, variant.history) if a["z"] is not None]
    assert len(zs) > 20
    np.testing.assert_allclose(*zip(*zs), rtol=1e-12)


def test_margin_lowers_and_trend_changes_the_statistic():
    bench = _bench()
    d = np.array([1.0] * 30 + [0.0] * 160 + [-1.0] * 10)  # mean drop 0.1
    assert bench._z_against(d, 0.0) > bench._z_against(d, 0.05) > 0 > bench._z_against(d, 0.15)


def test_first_crossing_and_a_tiny_run(capsys):
    bench = _bench()
    z = np.array([[-np.inf, 1.0, 4.5, 5.0], [0.0, 1.0, 2.0, 3.0]])
    assert bench.first_crossing(z, 4.0).tolist() == [2, -1]
    bench.main(["--runs", "2", "--variant", "trend"])
    out = capsys.readouterr().out
    assert "variant trend" in out and out.count("%") == 9 * 7  # 9 thresholds x (3 FA + rise + 3 scenarios)


def test_grown_threshold_and_per_evaluation_crossing(capsys):
    bench = _bench()
    th = bench.grown_threshold(4.0, 0.4, 160)
    assert th[:40].tolist() == [4.0] * 40 and th[79] == 4.4 and th[159] == 4.8
    z = np.array([[0.0] * 40 + [4.01] + [0.0] * 39, [0.0] * 79 + [4.5]])
    assert bench.first_crossing(z, 4.0).tolist() == [40, 79]
    # the 41st evaluation's threshold is 4.0 + 0.4 log2(41 / 40) = 4.014 > 4.01; the 80th's is 4.4 < 4.5
    assert bench.first_crossing(z, bench.grown_threshold(4.0, 0.4, 80)).tolist() == [-1, 79]
    bench.main(["--runs", "2", "--warmup", "1", "--growth", "0.2", "0.4"])
    out = capsys.readouterr().out
    assert "warm-up 1" in out and "growth 0.40: FA 80  FA 160" in out
    assert out.count("%") == 9 * 7 + 7 * 2 * 2  # the frontier, then 7 thresholds x 2 growths x (FA 80, FA 160)


def test_the_original_suite_has_no_slow_rise_and_still_runs(capsys):
    _bench().main(["--runs", "2", "--suite", "original"])
    out = capsys.readouterr().out
    assert "suite original" in out and out.count("nan%") == 9  # the slow-rise column, one per threshold
