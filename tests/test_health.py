"""HealthMonitorCallback (issue 13, part 2): each signal fires at its limit and not below it; goodhart.json; stop."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from trl_lab.callbacks import GoodhartCallback, HealthMonitorCallback

HEALTHY = {"heldout/kl_to_ref": 0.0, "heldout/repetition": 0.05, "heldout/mean_length": 40.0, "heldout/entropy": 2.0,
           "heldout/distinct_answers": 1.0}


def fired(cb: HealthMonitorCallback, step: int, **changes) -> list[str]:
    return [w["signal"] for w in cb.check(step, {**HEALTHY, **changes})]


def test_each_signal_fires_past_its_limit_only():
    cb = HealthMonitorCallback(kl_rate=0.005)  # repetition +0.1, length x1.5, entropy x0.5: the defaults
    assert fired(cb, 0) == []
    assert fired(cb, 10, **{"heldout/kl_to_ref": 0.04, "heldout/repetition": 0.14, "heldout/mean_length": 59.0,
                            "heldout/entropy": 1.1, "heldout/distinct_answers": 0.91}) == []
    # 0.004/step, +0.09, x1.475, x0.55, x0.91
    got = fired(cb, 20, **{"heldout/kl_to_ref": 0.15, "heldout/repetition": 0.2, "heldout/mean_length": 61.0,
                           "heldout/entropy": 0.9, "heldout/distinct_answers": 0.89})
    # 0.011/step since step 10, +0.15, x1.525, x0.45, x0.89
    assert got == ["kl_growth", "repetition_jump", "length_jump", "entropy_collapse", "diversity_collapse"]
    kl = cb.warnings[0]
    assert kl["value"] == pytest.approx(0.011) and kl["reference"] == 0.04 and kl["limit"] == 0.005
    # the KL rate is per step between evaluations: a slower climb afterwards does not fire
    assert "kl_growth" not in fired(cb, 40, **{"heldout/kl_to_ref": 0.2})


def test_signals_can_be_switched_off_and_bad_limits_are_refused():
    cb = HealthMonitorCallback(kl_rate=None, repetition_jump=None, length_ratio=None, entropy_ratio=None,
                               diversity_ratio=None)
    fired(cb, 0)
    assert fired(cb, 10, **{"heldout/kl_to_ref": 9.0, "heldout/repetition": 1.0, "heldout/mean_length": 999.0,
                            "heldout/entropy": 0.0, "heldout/distinct_answers": 0.01}) == []
    for kwargs, message in (({"kl_rate": -1}, "kl_rate"), ({"entropy_ratio": 1.5}, "entropy_ratio must be below 1"),
                            ({"length_ratio": 0.9}, "length_ratio must be above 1"),
                            ({"diversity_ratio": 1.0}, "diversity_ratio must be below 1"),
                            ({"repetition_jump": float("nan")}, "repetition_jump")):
        with pytest.raises(ValueError, match=message):
            HealthMonitorCallback(**kwargs)


def hook(tmp_path, step: int):
    state = TrainerState()
    state.global_step = step
    return SimpleNamespace(output_dir=str(tmp_path)), state, TrainerControl()


def test_warns_in_the_log_and_in_goodhart_json_and_stops_only_when_asked(tmp_path, caplog):
    warn_only, stopper = HealthMonitorCallback(), HealthMonitorCallback(stop=True)
    for cb in (warn_only, stopper):
        args, state, control = hook(tmp_path, 0)
        cb.on_log(args, state, control, logs=dict(HEALTHY))
        args, state, control = hook(tmp_path, 10)
        with caplog.at_level("WARNING", logger="trl_lab.callbacks.health"):
            cb.on_log(args, state, control, logs={**HEALTHY, "heldout/mean_length": 100.0})
        assert control.should_training_stop is cb.stop
    assert "length_jump at step 10" in caplog.text
    # the Goodhart verdict written later keeps the health entry, and the health entry keeps the verdict
    goodhart = GoodhartCallback()
    goodhart.observe(10, 0.5, 0.5)
    goodhart.save_report(tmp_path)
    report = json.loads((tmp_path / "goodhart.json").read_text())
    assert report["health"]["fired"] == ["length_jump"] and report["triggered"] is False
    warn_only.save_report(tmp_path)
    report = json.loads((tmp_path / "goodhart.json").read_text())
    assert "history" in report and report["health"]["warnings"][0]["value"] == 100.0


def test_logs_without_heldout_metrics_are_ignored(tmp_path):
    cb = HealthMonitorCallback()
    args, state, control = hook(tmp_path, 3)
    cb.on_log(args, state, control, logs={"loss": 1.0, "reward": 0.3})
    assert cb.first == {} and not (tmp_path / "goodhart.json").exists()
