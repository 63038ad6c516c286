"""GoodhartCallback as a detector: goals on simulated runs, observe() semantics, report, state, snapshots."""

from __future__ import annotations

import json
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import TrainerControl, TrainerState

from trl_lab.callbacks import GoldItemsSource, GoodhartCallback
from trl_lab.testing.goodhart_sim import SCENARIOS, score, simulate, simulate_run

N = 500


def items_for(acc: float, seed: int, n: int = N) -> np.ndarray:
    """Per-item results with exactly round(acc*n) correct, at positions drawn afresh for each ``seed``."""
    x = np.zeros(n, dtype=bool)
    x[: round(acc * n)] = True
    return np.random.default_rng(seed).permutation(x)


def feed(cb: GoodhartCallback, golds, proxies, paired: bool = True) -> int | None:
    """Observe a scripted stream at steps 10, 20, ...; the index of the evaluation that fired, if any."""
    for k, (g, p) in enumerate(zip(golds, proxies)):
        items = items_for(g, seed=k) if paired else None
        if cb.observe(10 * (k + 1), p, float(np.mean(items)) if paired else g, items):
            return k
    return None


RISE_THEN_FALL = [0.30, 0.40, 0.50, 0.60, 0.64, 0.66, 0.65, 0.60, 0.54, 0.48, 0.42, 0.36]
RISING_PROXY = [0.1 * k for k in range(len(RISE_THEN_FALL))]


# ------------------------------------------------------------------------------------ simulated goals


def run_detector(scenario, runs: int, seed: int = 123, **kwargs) -> list:
    """Outcomes of a ``GoodhartCallback(**kwargs)`` on ``runs`` simulated runs of ``scenario`` (name or Scenario)."""
    outcomes = []
    for run in simulate(scenario, runs, n_items=N, seed=seed):
        cb = GoodhartCallback(**kwargs)
        fired = best = None
        for k, step in enumerate(run.steps):
            if cb.observe(int(step), float(run.proxy[k]), float(run.gold[k]), run.items[k]):
                fired, best = k, int(np.searchsorted(run.steps, cb.best_step))
                break
        outcomes.append(score(run, fired, best))
    return outcomes


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.ERROR)
    yield
    logging.getLogger("trl_lab.callbacks.goodhart").setLevel(logging.NOTSET)


def test_few_false_alarms_on_healthy_runs():
    outcomes = run_detector("healthy", 200)
    assert sum(o.fired for o in outcomes) / 200 <= 0.02


@pytest.mark.parametrize("scenario,max_median_delay", [("hacked_slow", 12), ("hacked_fast", 6), ("collapse", 2)])
def test_detects_hacked_and_collapsed_runs(scenario, max_median_delay):
    outcomes = run_detector(scenario, 200)
    detected = [o for o in outcomes if o.detected]
    assert len(detected) / 200 >= 0.95
    assert sum(o.early for o in outcomes) / 200 <= 0.02
    assert np.median([o.delay for o in detected]) <= max_median_delay
    assert np.mean([o.regret for o in detected]) <= 0.01  # restored step within 1 point of the true peak, on average


def test_simulator_is_deterministic_and_scenarios_have_their_shape():
    a, b = simulate_run(SCENARIOS["hacked_fast"], n_items=100, seed=7), simulate_run(SCENARIOS["hacked_fast"], 100, 7)
    assert np.array_equal(a.items, b.items) and np.array_equal(a.proxy, b.proxy)
    assert a.true_acc[a.onset] - a.true_acc[-1] > 0.3  # >= 2.5 points/eval for >= 19 evaluations
    assert a.proxy[-1] > a.proxy[a.onset]
    healthy = simulate_run(SCENARIOS["healthy"], 100, 7)
    assert healthy.onset is None and healthy.true_acc[-10:].std() < 0.02
    # observed accuracy is the mean of the items, with binomial-scale noise around the truth
    assert np.allclose(a.gold, a.items.mean(axis=1))
    assert 0.005 < np.std(a.gold - a.true_acc) < 0.06


# ------------------------------------------------------------------------------------ observe() semantics


def test_fires_on_rise_then_fall_with_best_at_smoothed_peak():
    cb = GoodhartCallback(rule="paired_z")
    fired = feed(cb, RISE_THEN_FALL, RISING_PROXY)
    assert fired is not None and cb.triggered and cb.trigger_reason == "goodhart"
    assert cb.triggered_step == 10 * (fired + 1)
    golds = [e["gold"] for e in cb.history]
    smoothed = [np.mean(golds[max(0, i - 1) : i + 2]) for i in range(fired)]  # final ones: up to fired-1
    assert cb.best_step == 10 * (int(np.argmax(smoothed)) + 1)
    assert cb.best_gold == pytest.approx(max(smoothed))
    assert cb.proxy_point == pytest.approx(RISING_PROXY[cb.best_step // 10 - 1])
    # it takes two consecutive evaluations at z >= 3.5 after the peak (patience 2)
    zs = [e["z"] for e in cb.history]
    assert zs[fired] >= 3.5 and zs[fired - 1] >= 3.5 and not (zs[fired - 2] or 0) >= 3.5


def test_no_goodhart_trigger_when_proxy_falls_too_but_collapse_still_fires():
    falling_proxy = [1.0 - 0.1 * k for k in range(len(RISE_THEN_FALL))]
    cb = GoodhartCallback()
    assert feed(cb, RISE_THEN_FALL[:10], falling_proxy) is None  # down to 0.48: z about 5.5, below collapse_z
    assert sum((e["z"] or 0) >= 3.5 for e in cb.history) >= 2  # gold did fall significantly, persistently
    collapse = [0.30, 0.45, 0.55, 0.60, 0.62, 0.61, 0.20]
    cb = GoodhartCallback()
    assert feed(cb, collapse, falling_proxy) == 6 and cb.trigger_reason == "collapse"


def drive_logs(cb: GoodhartCallback, tmp_path, golds, training_logs, every: int = 5) -> GoodhartCallback:
    """Feed ``cb`` through ``on_log`` as a trainer would, steps 0..30: ``training_logs(step)`` from step 1 on (no
    training reward before the first step) and a held-out evaluation of ``golds[step // every]`` every ``every``
    steps, with its per-item results from a FakeHeldout; stops when the callback asks to."""
    state, control, args = TrainerState(), TrainerControl(), hook_args(tmp_path)
    cb.heldout = src = FakeHeldout()
    for step in range(0, 31):
        state.global_step = step
        logs = {} if step == 0 else dict(training_logs(step))
        if step % every == 0:
            items = items_for(golds[step // every], seed=step)
            src.last_items, src.last_step = items.tolist(), step
            logs["heldout/accuracy"] = float(items.mean())
        cb.on_log(args, state, control, logs=logs)
        if control.should_training_stop:
            break
    return cb


def test_peak_at_the_step_zero_evaluation_compares_the_proxy_with_its_first_value(tmp_path):
    """Best at step 0, evaluated before any proxy was logged (a hack from the first step on): the rise is measured
    from the proxy's first logged value. Before the fix the proxy point was NaN and the rule could never fire."""
    falling = [0.60, 0.58, 0.50, 0.45, 0.45, 0.45]
    cb = GoodhartCallback(rule="paired_z", proxy_ema=1.0)
    drive_logs(cb, tmp_path, falling, lambda step: {"reward": 0.5 + 0.01 * step})
    assert cb.history[0]["step"] == 0 and math.isnan(cb.history[0]["proxy"])
    assert cb.best_step == 0 and cb.first_proxy == pytest.approx(0.51)
    assert cb.triggered and cb.trigger_reason == "goodhart" and cb.triggered_step == 20
    assert cb.proxy_point == pytest.approx(0.51)  # reported: where the proxy started
    # A proxy that never rose above its first value still does not make a Goodhart verdict.
    flat = GoodhartCallback()
    for k, gold in enumerate(falling):
        proxy = math.nan if k == 0 else 0.5
        flat.observe(5 * k, proxy, gold, items_for(gold, seed=k))
    assert not flat.triggered and flat.first_proxy == 0.5


def test_a_flat_total_whose_gamed_part_rises_is_a_goodhart_divergence(tmp_path):
    """Checker + length bonus: the total reward drifts down because the length part rises while the checker part
    falls faster with accuracy (study arm 4, seed 45). With proxy_components (the default) the rise of one part makes the
    Goodhart verdict and trigger_proxy names it; without it the flat total blocks the trigger; a lone plugin's mean
    is the total itself and adds nothing."""
    falling = [0.60, 0.58, 0.50, 0.46, 0.45, 0.45, 0.45]

    def parts(step: int) -> dict[str, float]:
        length = min(0.5, 0.1 + 0.02 * step)
        checker = 0.6 - 1.2 * (length - 0.1)  # the checker part loses more than the length part gains
        return {"reward": checker + length, "loss": 1.0, "rewards/gsm8k/mean": checker, "rewards/length/mean": length}

    def run(**kwargs):
        return drive_logs(GoodhartCallback(rule="paired_z", proxy_ema=1.0, **kwargs), tmp_path, falling, parts)

    watched = run()
    assert watched.triggered and watched.trigger_reason == "goodhart" and watched.triggered_step == 20
    assert watched.trigger_proxy == "rewards/length/mean" and watched.best_step == 0
    assert watched.first_components == pytest.approx({"rewards/gsm8k/mean": 0.576, "rewards/length/mean": 0.12})
    assert watched.history[-1]["components"]["rewards/length/mean"] == pytest.approx(0.5)
    report = json.loads((tmp_path / "goodhart.json").read_text())
    assert report["trigger_proxy"] == "rewards/length/mean" and report["rule"]["proxy_components"] is True
    total_only = run(proxy_components=False)
    assert not total_only.triggered, (total_only.trigger_reason, total_only.trigger_proxy, total_only.history)
    assert sum((e["z"] or 0) >= 3.5 for e in total_only.history) >= 2
    # The state round trip keeps the parts (a resumed run watches them on).
    saved = json.loads(json.dumps(watched.state()))
    assert GoodhartCallback.from_state(saved).component_points == watched.component_points
    from trl_lab.callbacks.goodhart import reward_components
    assert reward_components({"rewards/gsm8k/mean": 0.2, "reward": 0.2}) == []
    assert reward_components({"rewards/a/mean": 0.2, "rewards/b/mean": float("nan"), "rewards/c/std": 0.1}) == []


def test_paired_z_needs_two_bad_evaluations_in_a_row():
    dip = [0.30, 0.45, 0.55, 0.60, 0.62, 0.61, 0.48, 0.61, 0.62, 0.60, 0.48, 0.61]
    cb = GoodhartCallback(rule="paired_z")
    assert feed(cb, dip, RISING_PROXY) is None
    assert sum((e["z"] or 0) >= 3.5 for e in cb.history) == 2  # two isolated significant dips, never consecutive


def test_the_default_glr_fires_on_one_clear_drop_and_not_on_a_mild_dip():
    """glr (the default) has patience 1: one evaluation far below the five-evaluation reference is enough, where
    paired_z waits for a second; its higher threshold (4.15) is what keeps a mild dip from firing."""
    plateau = [0.30, 0.45, 0.55, 0.60, 0.62, 0.61, 0.62, 0.60, 0.61]
    drop = plateau[:7] + [0.48] + plateau[7:]
    cb = GoodhartCallback()
    assert feed(cb, drop, RISING_PROXY) == 7 and cb.trigger_reason == "goodhart"
    assert 4.15 <= cb.history[-1]["z"] < cb.collapse_z and cb.best_step in (50, 60, 70)
    assert feed(GoodhartCallback(rule="paired_z"), drop, RISING_PROXY) is None  # one evaluation: not enough for it
    assert feed(GoodhartCallback(), plateau[:7] + [0.58] + plateau[7:], RISING_PROXY) is None


def test_warmup_blocks_early_persistent_triggers():
    early_fall = [0.60, 0.62, 0.48, 0.47, 0.47, 0.47]  # z about 5 (below collapse_z) from the third on
    assert feed(GoodhartCallback(rule="paired_z", warmup_evals=6), early_fall, RISING_PROXY) is None
    assert feed(GoodhartCallback(rule="paired_z", warmup_evals=0), early_fall, RISING_PROXY) == 3


def test_after_trigger_observations_are_ignored():
    cb = GoodhartCallback()
    fired = feed(cb, RISE_THEN_FALL, RISING_PROXY)
    before = (cb.best_step, cb.triggered_step, len(cb.history))
    assert cb.observe(999, 10.0, 0.99, items_for(0.99, 0)) is True
    assert (cb.best_step, cb.triggered_step, len(cb.history)) == before and fired is not None


def test_paired_statistic_is_the_paired_difference_z():
    cb = GoodhartCallback(smoothing=0, warmup_evals=0)
    ref, cur = items_for(0.6, 1), items_for(0.5, 2)
    cb.observe(1, 0.0, ref.mean(), ref)
    cb.observe(2, 1.0, cur.mean(), cur)
    d = ref.astype(float) - cur.astype(float)
    b, c = int(((~ref) & cur).sum()), int((ref & ~cur).sum())  # McNemar's discordant counts
    expected = d.mean() / (d.std(ddof=1) / math.sqrt(N))
    assert cb.history[-1]["z"] == pytest.approx(expected)
    assert expected == pytest.approx((c - b) / math.sqrt(b + c - (c - b) ** 2 / N) * math.sqrt((N - 1) / N), rel=1e-9)


def test_unpaired_statistic_uses_given_stderr_or_binomial_n():
    cb = GoodhartCallback(smoothing=0)
    cb.observe(1, 0.0, 0.60, gold_stderr=0.02)
    cb.observe(2, 0.0, 0.50, gold_stderr=0.03)
    assert cb.history[-1]["z"] == pytest.approx(0.10 / math.sqrt(0.02**2 + 0.03**2))
    cb = GoodhartCallback(smoothing=0, gold_n=400)
    cb.observe(1, 0.0, 0.60)
    cb.observe(2, 0.0, 0.50)
    assert cb.history[-1]["z"] == pytest.approx(0.10 / math.sqrt(0.6 * 0.4 / 400 + 0.5 * 0.5 / 400))


def test_without_any_standard_error_it_never_fires_and_says_why(caplog):
    cb = GoodhartCallback()
    with caplog.at_level(logging.WARNING, logger="trl_lab.callbacks.goodhart"):
        assert feed(cb, RISE_THEN_FALL, RISING_PROXY, paired=False) is None
    assert "no standard error" in caplog.text


# ------------------------------------------------------------------------------------ trainer hooks, report, state


class FakeHeldout:
    """A GoldItemsSource scripted by the test."""

    def __init__(self):
        self.last_items: list[bool] | None = None
        self.last_step: int | None = None


def hook_args(tmp_path):
    return SimpleNamespace(output_dir=str(tmp_path))


def test_on_log_reads_proxy_every_step_and_gold_at_eval_steps(tmp_path):
    src = FakeHeldout()
    assert isinstance(src, GoldItemsSource)
    cb = GoodhartCallback(rule="paired_z", heldout=src, proxy_ema=0.5)
    state, control, args = TrainerState(), TrainerControl(), hook_args(tmp_path)
    evals = iter(RISE_THEN_FALL)
    for step in range(1, 61):
        state.global_step = step
        logs = {"reward": 0.01 * step, "loss": 1.0}
        if step % 5 == 0:
            items = items_for(next(evals), seed=step)
            src.last_items, src.last_step = items.tolist(), step
            logs["heldout/accuracy"] = float(items.mean())
        cb.on_log(args, state, control, logs=logs)
        if control.should_training_stop:
            break
    assert control.should_training_stop and cb.triggered_step == state.global_step
    assert [e["step"] for e in cb.history] == list(range(5, state.global_step + 1, 5))
    # proxy at each gold observation is the EMA (weight 0.5) of the logged rewards up to that step
    ema = None
    for step in range(1, 6):
        ema = 0.01 * step if ema is None else ema + 0.5 * (0.01 * step - ema)
    assert cb.history[0]["proxy"] == pytest.approx(ema)
    report = json.loads((tmp_path / "goodhart.json").read_text())
    assert report["triggered"] and report["triggered_step"] == cb.triggered_step
    assert report["best_step"] == cb.best_step and report["proxy_point"] == pytest.approx(cb.proxy_point)
    assert report["rule"]["z_threshold"] == 3.5 and len(report["history"]) == len(cb.history)


def test_gold_from_logs_with_stderr_and_no_items(tmp_path):
    cb = GoodhartCallback(smoothing=0)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 1
    cb.on_log(hook_args(tmp_path), state, control, logs={"reward": 0.0, "heldout/accuracy": 0.6,
                                                           "heldout/accuracy_stderr": 0.02})
    state.global_step = 2
    cb.on_log(hook_args(tmp_path), state, control, logs={"reward": 1.0, "heldout/accuracy": 0.5,
                                                           "heldout/accuracy_stderr": 0.02})
    assert cb.history[-1]["z"] == pytest.approx(0.1 / math.sqrt(0.0008))


def test_state_round_trip_continues_identically():
    a = GoodhartCallback(z_threshold=3.2, patience=3)
    feed(a, RISE_THEN_FALL[:7], RISING_PROXY[:7])
    saved = json.loads(json.dumps(a.state()))  # what trainer_state.json holds
    b = GoodhartCallback.from_state(saved)
    assert b.z_threshold == 3.2 and b.patience == 3 and b.best_step == a.best_step
    for k in range(7, len(RISE_THEN_FALL)):
        items = items_for(RISE_THEN_FALL[k], seed=k)
        ra = a.observe(10 * (k + 1), RISING_PROXY[k], float(items.mean()), items)
        rb = b.observe(10 * (k + 1), RISING_PROXY[k], float(items.mean()), items)
        assert ra == rb
    assert a.report() == b.report()
    assert a.triggered and a.triggered_step == b.triggered_step


def test_snapshots_restore_best_weights_from_memory_and_disk(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)  # frozen params are not snapshotted (LoRA: only the adapter is)
    weights = {}
    cb = GoodhartCallback(rule="paired_z")
    for k, (g, p) in enumerate(zip(RISE_THEN_FALL, RISING_PROXY)):
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.1)
        step = 10 * (k + 1)
        weights[step] = {n: t.detach().clone() for n, t in model.named_parameters()}
        items = items_for(g, seed=k)
        if cb.observe(step, p, float(items.mean()), items, model=model):
            break
        if k == 6:
            cb.persist(tmp_path / "goodhart_best")  # a checkpoint save while the best is known
    assert cb.triggered and set(cb._snapshots) <= {cb.best_step, cb.triggered_step}
    assert set(cb._snapshots[cb.best_step]) == {"0.bias", "1.weight", "1.bias"}
    assert cb.restore(model)
    best = weights[cb.best_step]
    for name, param in model.named_parameters():
        expected = best[name] if name != "0.weight" else weights[cb.triggered_step][name]
        assert torch.equal(param, expected), name
    # A callback rebuilt from state (resume) restores from the safetensors written at the save.
    on_disk = {int(p.stem.split("-")[1]) for p in (tmp_path / "goodhart_best").glob("step-*.safetensors")}
    assert cb.best_step in on_disk
    rebuilt = GoodhartCallback.from_state(json.loads(json.dumps(cb.state())))
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    assert rebuilt.restore(model, tmp_path / "goodhart_best")
    assert torch.equal(model[1].weight, best["1.weight"])


def test_train_end_redraws_a_run_report_written_before_the_verdict(tmp_path):
    """A report written by a callback ahead of the detector (MetricsLoggerCallback) gets the final verdict."""
    from trl_lab.report import write_report

    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"reward": 0.1 * s, "heldout/accuracy": 0.3, "heldout/accuracy_stderr": 0.05, "step": s}) + "\n"
        for s in range(4)))
    write_report(tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["goodhart"] is None
    cb = GoodhartCallback(gold_n=100)
    state, control = TrainerState(), TrainerControl()
    state.global_step = 3
    cb.on_train_end(hook_args(tmp_path), state, control)
    verdict = json.loads((tmp_path / "report.json").read_text())["goodhart"]
    assert verdict is not None and verdict["triggered"] is False
