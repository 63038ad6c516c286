"""The persistent-outcome simulator and GoodhartCallback's ``glr`` rule (issue 13, part 1), with numbers."""

from __future__ import annotations

import dataclasses
import json
import logging
import math

import numpy as np
import pytest

from tests.test_goodhart import run_detector
from trl_lab.callbacks import GoodhartCallback
from trl_lab.testing.goodhart_sim import PERSISTENT_SCENARIOS, SCENARIOS, persistent_suite, simulate_run


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    yield
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.NOTSET)


def agreement(items: np.ndarray, lag: int) -> float:
    """Share of items with the same outcome at evaluations ``lag`` apart."""
    return float((items[lag:] == items[:-lag]).mean())


def test_persistent_items_keep_their_outcomes_and_the_true_accuracy():
    fresh = simulate_run(SCENARIOS["healthy"], n_items=2000, seed=3)
    persistent = simulate_run(dataclasses.replace(SCENARIOS["healthy"], persistence=0.95), n_items=2000, seed=3)
    # same curve and difficulties (same draws before the items), so the same true accuracy
    assert np.allclose(fresh.true_acc, persistent.true_acc)
    assert abs(persistent.gold - persistent.true_acc).max() < 0.05
    # an item right at one evaluation is usually right at the next: far fewer discordant pairs than fresh draws
    assert agreement(fresh.items, 1) < 0.85
    assert agreement(persistent.items, 1) > 0.92
    # AR(1): agreement decays with the lag; item memory keeps a floor
    memory = simulate_run(persistent_suite(0.8, item_memory=0.8)["healthy"], n_items=2000, seed=3)
    assert agreement(persistent.items, 20) < agreement(persistent.items, 1) - 0.05
    assert agreement(memory.items, 20) > agreement(persistent.items, 20) + 0.05


def test_kept_share_matches_the_item_model():
    """bench/heldout_persistence.py fits real runs with kept_share: fresh draws keep p^2 + (1-p)^2 on average
    items (more with spread difficulties), persistence raises the short lags, memory keeps a floor."""
    from trl_lab.testing.goodhart_sim import kept_share

    flat = kept_share([0.2, 0.5], [1, 10], persistence=0.0, difficulty_sd=0.01, n_items=20000, n_evals=12)
    assert flat[0.2][1] == pytest.approx(0.2**2 + 0.8**2, abs=0.01) and flat[0.5][10] == pytest.approx(0.5, abs=0.01)
    spread = kept_share([0.2], [1], persistence=0.0, difficulty_sd=2.0, n_items=20000, n_evals=4)[0.2][1]
    assert spread > flat[0.2][1] + 0.05
    ar = kept_share([0.2], [1, 10], persistence=0.95, n_items=5000, n_evals=12)[0.2]
    memory = kept_share([0.2], [1, 10], persistence=0.3, item_memory=0.8, n_items=5000, n_evals=12)[0.2]
    assert ar[1] > ar[10] + 0.05 and abs(memory[1] - memory[10]) < 0.02
    assert memory[10] > kept_share([0.2], [10], persistence=0.0, n_items=5000, n_evals=12)[0.2][10] + 0.05


def test_kept_share_at_zero_and_full_accuracy_is_one_without_warnings():
    """A real run can sit at 0% (a collapsed hack): every item wrong at both evaluations, no log(0) on the way."""
    import warnings

    from trl_lab.testing.goodhart_sim import kept_share

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shares = kept_share([0.0, 1.0], [1, 3], persistence=0.5, difficulty_sd=0.5, n_items=500, n_evals=5)
    assert shares == {0.0: {1: 1.0, 3: 1.0}, 1.0: {1: 1.0, 3: 1.0}}


def test_persistent_suite_has_issue_13_shapes():
    slow = simulate_run(PERSISTENT_SCENARIOS["hacked_slow"], n_items=200, seed=1)
    fast = simulate_run(PERSISTENT_SCENARIOS["hacked_fast"], n_items=200, seed=1)
    collapse = simulate_run(PERSISTENT_SCENARIOS["collapse"], n_items=200, seed=1)
    for run in (slow, fast, collapse):
        assert len(run.steps) == 40 and 10 <= run.onset <= 22
    # 0.4 / 1 point per evaluation after the peak (true accuracy on this item set, so within a few tenths)
    assert (slow.true_acc[slow.onset] - slow.true_acc[slow.onset + 10]) == pytest.approx(0.04, abs=0.008)
    assert (fast.true_acc[fast.onset] - fast.true_acc[fast.onset + 10]) == pytest.approx(0.10, abs=0.015)
    assert (collapse.true_acc[collapse.onset] - collapse.true_acc[collapse.onset + 1]) == pytest.approx(0.15, abs=0.02)
    with pytest.raises(ValueError, match="persistence"):
        simulate_run(persistent_suite(1.0)["healthy"], n_items=10)


def test_window_z_is_the_paired_test_of_the_best_window_since_the_best_step():
    cb = GoodhartCallback(rule="glr", proxy_metric=None, z_threshold=100.0, collapse_z=100.0, smoothing=1)  # never fires
    rng = np.random.default_rng(0)
    base = rng.random(400) < 0.6
    runs = [base.copy() for _ in range(6)]
    for k, drop in enumerate([0, 0, 0, 10, 20, 30]):  # items flipped to wrong at each evaluation
        runs[k][np.flatnonzero(base)[:drop]] = False
    for k, x in enumerate(runs):
        cb.observe(10 * (k + 1), 0.0, float(x.mean()), x)
    # best = evaluation 0 (smoothed peak, first on ties; reference = its window, evals 0-1); windows [j, 5], j >= 1
    assert cb.best_step == 10
    ref = np.mean(runs[0:2], axis=0)
    candidates = []
    for j in range(1, 6):
        d = ref - np.mean(runs[j:6], axis=0)
        candidates.append(d.mean() / (d.std(ddof=1) / math.sqrt(d.size)))
    assert cb.history[-1]["z"] == pytest.approx(max(candidates))
    last = ref - runs[5]
    assert cb.history[-1]["z_last"] == pytest.approx(last.mean() / (last.std(ddof=1) / math.sqrt(400)))


def test_threshold_is_flat_up_to_the_horizon_then_grows_like_the_gaussian_max():
    cb = GoodhartCallback(rule="glr", z_threshold=4.0, horizon=40, threshold_growth="gaussian")
    assert cb.threshold(1) == cb.threshold(40) == 4.0
    assert cb.threshold(160) == pytest.approx(math.sqrt(16 + 2 * math.log(4)))
    assert cb.threshold(80) < cb.threshold(160) < 4.4
    with pytest.raises(ValueError, match="rule 'cusum'"):
        GoodhartCallback(rule="cusum")
    paired = GoodhartCallback(rule="paired_z")
    assert paired.z_threshold == 3.5 and paired.threshold(160) == pytest.approx(math.sqrt(3.5**2 + 2 * math.log(4)))


def test_glr_defaults_grow_its_threshold_per_doubling_beyond_the_horizon():
    """glr's running-maximum statistic drifts up on long healthy plateaus: its threshold grows 1.0 per doubling."""
    glr = GoodhartCallback()  # the default rule
    assert (glr.rule, glr.z_threshold, glr.patience, glr.smoothing, glr.threshold_growth) == ("glr", 4.15, 1, 2, 1.0)
    assert glr.threshold(40) == 4.15
    assert glr.threshold(80) == pytest.approx(5.15) and glr.threshold(160) == pytest.approx(6.15)
    assert GoodhartCallback(rule="glr", threshold_growth=0.0).threshold(160) == 4.15  # flat when asked
    assert GoodhartCallback(rule="glr", smoothing=1).smoothing == 1  # explicit values win over the rule's
    assert GoodhartCallback(rule="paired_z").smoothing == 1
    for bad in (-0.1, float("inf"), "linear"):
        with pytest.raises(ValueError, match="threshold_growth"):
            GoodhartCallback(rule="glr", threshold_growth=bad)
    state = json.loads(json.dumps(glr.state()))
    assert state["args"]["threshold_growth"] == 1.0 and GoodhartCallback.from_state(state).threshold(80) == \
        pytest.approx(5.15)


def outcomes(rule: str, scenario, runs: int) -> list:
    return run_detector(scenario, runs, seed=11, rule=rule)


def test_glr_catches_slow_declines_sooner_than_paired_z_on_persistent_items():
    scenario = persistent_suite(0.8, item_memory=0.8)["hacked_slow"]
    glr, old = outcomes("glr", scenario, 40), outcomes("paired_z", scenario, 40)
    assert sum(o.detected for o in glr) >= sum(o.detected for o in old) >= 36
    assert np.median([o.delay for o in glr if o.detected]) < np.median([o.delay for o in old if o.detected])
    assert np.mean([o.regret for o in glr if o.detected]) <= 0.01
    assert not any(o.fired for o in outcomes("glr", persistent_suite(0.8, item_memory=0.8)["healthy"], 40))


def test_glr_state_round_trip_continues_identically():
    run = simulate_run(PERSISTENT_SCENARIOS["hacked_fast"], n_items=300, seed=5)
    a = GoodhartCallback(rule="glr")
    for k in range(15):
        a.observe(int(run.steps[k]), float(run.proxy[k]), float(run.gold[k]), run.items[k])
    b = GoodhartCallback.from_state(json.loads(json.dumps(a.state())))
    assert b.rule == "glr" and b.horizon == 40 and len(b.since_best) == len(a.since_best)
    for k in range(15, 40):
        args = (int(run.steps[k]), float(run.proxy[k]), float(run.gold[k]), run.items[k])
        assert a.observe(*args) == b.observe(*args)
    assert a.report() == b.report() and a.triggered


def test_only_glr_keeps_the_per_item_results_since_the_best_step():
    run = simulate_run(PERSISTENT_SCENARIOS["healthy"], n_items=50, seed=2)
    old, glr = GoodhartCallback(rule="paired_z"), GoodhartCallback(rule="glr")
    for k in range(12):
        for cb in (old, glr):
            cb.observe(int(run.steps[k]), float(run.proxy[k]), float(run.gold[k]), run.items[k])
    best = next(i for i, e in enumerate(glr.history) if e["step"] == glr.best_step)
    assert old.since_best == [] and len(glr.since_best) == 12 - 1 - best  # what a checkpoint's state holds


def test_change_ratio_is_lag_one_changes_over_longer_lag_changes():
    cb = GoodhartCallback(rule="glr")
    rows = [[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]]
    for k, row in enumerate(rows[:2]):
        cb.observe(k, 0.1 * k, float(np.mean(row)), row)
    assert cb.change_ratio is None and cb.history[-1]["change_ratio"] is None  # no lag-two pair yet
    cb.observe(2, 0.2, 0.25, rows[2])
    # lag one: 2 of 4 items changed since the previous evaluation; lag two: 3 of 4 since the first
    assert cb.change_ratio == pytest.approx(0.5 / 0.75) and cb.history[-1]["change_ratio"] == pytest.approx(2 / 3)
    assert cb.fresh_draw_bump() == 0.0 and cb.history[-1]["threshold"] == 4.15  # persistent: nothing added
    cb.lag_one_changes, cb.longer_lag_changes = 0.9, 1.0  # halfway up the ramp (0.85 .. 0.95)
    assert cb.fresh_draw_bump() == pytest.approx(0.25) and cb.threshold(10) == pytest.approx(4.4)
    cb.lag_one_changes = 1.02
    assert cb.threshold(10) == pytest.approx(4.65) and cb.threshold(80) == pytest.approx(5.65)
    for bad in (-0.1, float("nan"), "high"):
        with pytest.raises(ValueError, match="fresh_draw_z"):
            GoodhartCallback(fresh_draw_z=bad)


def test_fresh_draws_raise_glrs_threshold_and_persistent_outcomes_do_not():
    """Every item drawn afresh at each evaluation (sampled decoding) changes as often at lag one as at lag four;
    the simulator fitted to the study's greedy runs changes less often at lag one; only the first gets the bump."""
    fresh = simulate_run(SCENARIOS["healthy"], n_items=2000, seed=3)
    real_fit = simulate_run(persistent_suite(0.26, item_memory=0.5, difficulty_sd=0.75)["healthy"], n_items=2000,
                            seed=3)
    glr_fresh, glr_real, paired_fresh, no_items = (GoodhartCallback(rule="glr"), GoodhartCallback(rule="glr"),
                                                   GoodhartCallback(rule="paired_z"), GoodhartCallback(gold_n=2000))
    for k in range(12):
        glr_fresh.observe(int(fresh.steps[k]), float(fresh.proxy[k]), float(fresh.gold[k]), fresh.items[k])
        paired_fresh.observe(int(fresh.steps[k]), float(fresh.proxy[k]), float(fresh.gold[k]), fresh.items[k])
        no_items.observe(int(fresh.steps[k]), float(fresh.proxy[k]), float(fresh.gold[k]))
        glr_real.observe(int(real_fit.steps[k]), float(real_fit.proxy[k]), float(real_fit.gold[k]),
                         real_fit.items[k])
    assert 0.95 < glr_fresh.change_ratio < 1.05 and glr_real.change_ratio < 0.9
    # the full 0.5 on fresh draws; at most a small part of it on the real-fit outcomes (ratio just above 0.85)
    assert glr_fresh.threshold(12) == pytest.approx(4.15 + 0.5) and 4.15 <= glr_real.threshold(12) < 4.25
    assert paired_fresh.fresh_draw_z == 0.0 and paired_fresh.threshold(12) == 3.5  # paired_z: unchanged
    assert no_items.change_ratio is None and no_items.threshold(12) == 4.15  # accuracy only: nothing to measure
    assert [e["threshold"] for e in glr_fresh.history][-1] == pytest.approx(4.65)
    state = json.loads(json.dumps(glr_fresh.state()))
    assert state["args"]["fresh_draw_z"] == 0.5
    assert GoodhartCallback.from_state(state).threshold(12) == pytest.approx(4.65)  # the counts resume
