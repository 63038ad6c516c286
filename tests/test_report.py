"""The run report from a synthetic run log: four panels, marked steps, and a summary with the right numbers."""

from __future__ import annotations

import json

import pytest

from trl_lab.cli import main as cli_main
from trl_lab.report import load_log_history, series, write_overlay_report, write_report


def synthetic_run(folder, *, goodhart=True, kl_scale=1.0, as_trainer_state=False):
    """Reward climbs for 10 steps; held-out accuracy rises to 0.5 at step 4 then falls (reward hacking)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    accuracy = {0: 0.2, 2: 0.4, 4: 0.5, 6: 0.45, 8: 0.3, 10: 0.25}
    for step in range(0, 11):
        if step in accuracy:
            p = accuracy[step]
            entries.append({"heldout/accuracy": p, "heldout/accuracy_stderr": (p * (1 - p) / 100) ** 0.5,
                            "heldout/mean_length": 100 + 5 * step, "heldout/format_rate": 0.9, "step": step})
        if step > 0:
            entries.append({"reward": 0.1 * step, "rewards/gsm8k/mean": 0.05 * step, "kl": kl_scale * 0.01 * step,
                            "completions/mean_length": 120 + 10 * step, "loss": 0.0, "step": step})
    if as_trainer_state:
        (folder / "checkpoint-10").mkdir()
        (folder / "checkpoint-10" / "trainer_state.json").write_text(json.dumps({"log_history": entries}))
    else:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    if goodhart:
        (folder / "goodhart.json").write_text(json.dumps({"triggered_step": 8, "best_step": 4, "proxy_at_best": 0.4}))
    return folder


def test_report_png_has_four_panels_and_marks_trigger_and_best(tmp_path):
    run = synthetic_run(tmp_path / "run")
    report = write_report(run)
    assert report.png == run / "report.png" and report.png.stat().st_size > 20_000
    axes = report.figure.axes
    assert [ax.get_ylabel() for ax in axes] == [
        "reward", "held-out accuracy", "KL", "mean completion\nlength (tokens)",
    ]
    for ax in axes:
        vertical = sorted(float(line.get_xdata()[0]) for line in ax.lines if len(set(line.get_xdata())) == 1)
        assert vertical == [4.0, 8.0]
    reward_line = axes[0].lines[0]
    assert list(reward_line.get_xdata()) == list(range(1, 11))
    band = axes[1].collections[0].get_paths()[0].vertices  # the ±1.96·se band around accuracy
    assert band[:, 1].max() == pytest.approx(0.5 + 1.96 * 0.05)


def test_report_summary_numbers(tmp_path):
    run = synthetic_run(tmp_path / "run")
    summary = write_report(run).summary
    assert json.loads((run / "report.json").read_text()) == summary
    assert summary["steps"] == 10 and summary["n_heldout_evals"] == 6
    assert summary["initial_accuracy"] == 0.2 and summary["final_accuracy"] == 0.25
    assert summary["final_accuracy_stderr"] == pytest.approx((0.25 * 0.75 / 100) ** 0.5)
    assert summary["best_accuracy"] == 0.5 and summary["best_accuracy_step"] == 4
    assert summary["final_reward"] == pytest.approx(1.0) and summary["max_reward_step"] == 10
    assert summary["final_kl"] == pytest.approx(0.1) and summary["final_mean_length"] == 220
    assert summary["final_heldout_mean_length"] == 150
    assert summary["goodhart"] == {"triggered_step": 8, "best_step": 4, "proxy_at_best": 0.4}
    assert summary["accuracy_at_goodhart_best"] == 0.5 and summary["accuracy_at_goodhart_trigger"] == 0.3


def test_report_without_goodhart_or_metrics_file_reads_newest_checkpoint(tmp_path):
    run = synthetic_run(tmp_path / "run", goodhart=False, as_trainer_state=True)
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"log_history": [{"reward": 9, "step": 2}]}))
    report = write_report(run)
    assert report.summary["goodhart"] is None and report.summary["best_accuracy"] == 0.5
    assert "accuracy_at_goodhart_best" not in report.summary
    assert all(len(ax.lines) == 0 or all(len(set(l.get_xdata())) > 1 for l in ax.lines) for ax in report.figure.axes)


def test_summary_keeps_goodhart_scalars_and_reads_proxy_point(tmp_path):
    run = synthetic_run(tmp_path / "run", goodhart=False)
    (run / "goodhart.json").write_text(json.dumps({
        "triggered": True, "triggered_step": 6, "best_step": 2, "proxy_point": 0.2, "history": [{"step": 2}],
        "rule": {"z_threshold": 3.0},
    }))
    summary = write_report(run).summary
    assert summary["goodhart"] == {"triggered": True, "triggered_step": 6, "best_step": 2, "proxy_point": 0.2,
                                   "proxy_at_best": 0.2}
    assert summary["accuracy_at_goodhart_best"] == 0.4 and summary["accuracy_at_goodhart_trigger"] == 0.45


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_report(tmp_path)


def test_series_last_value_per_step_wins_and_skips_missing():
    entries = [{"kl": 1.0, "step": 1}, {"kl": None, "step": 2}, {"kl": 3.0, "step": 1}, {"loss": 1, "step": 3}]
    assert series(entries, "kl") == ([1], [3.0])


def test_overlay_of_a_kl_sweep(tmp_path):
    runs = [synthetic_run(tmp_path / f"beta{b}", kl_scale=k) for b, k in (("0.01", 1.0), ("0.1", 0.3))]
    fig = write_overlay_report(runs, ["beta=0.01", "beta=0.1"], tmp_path / "sweep" / "overlay.png")
    assert (tmp_path / "sweep" / "overlay.png").stat().st_size > 20_000
    assert [ax.get_ylabel() for ax in fig.axes] == ["reward", "held-out accuracy", "KL\n(training)", "held-out length\n(tokens)"]
    kl_lines = [line for line in fig.axes[2].lines if len(set(line.get_xdata())) > 1]
    assert [line.get_ydata()[-1] for line in kl_lines] == pytest.approx([0.1, 0.03])
    with pytest.raises(ValueError, match="1 labels for 2 runs"):
        write_overlay_report(runs, ["one"], tmp_path / "x.png")


def with_heldout_kl(run, values):
    """Add ``heldout/kl_to_ref`` at the held-out steps 0, 2, ... (and drop TRL's ``kl``, as a beta = 0 run has none)."""
    entries = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    values = iter(values)
    for e in entries:
        e.pop("kl", None)
        if "heldout/accuracy" in e:
            e["heldout/kl_to_ref"] = next(values)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return run


def test_heldout_kl_is_reported_and_overlaid_when_trl_logs_no_kl(tmp_path):
    """A beta = 0 run: no TRL ``kl``, but the held-out KL to the reference is summarised and drawn."""
    run = with_heldout_kl(synthetic_run(tmp_path / "beta0", goodhart=False), [0.0, 0.02, 0.05, 0.04, 0.09, 0.12])
    report = write_report(run)
    assert report.summary["final_kl"] is None
    assert report.summary["final_heldout_kl_to_ref"] == 0.12 and report.summary["max_heldout_kl_to_ref"] == 0.12
    kl_panel = report.figure.axes[2]
    assert [list(line.get_ydata()) for line in kl_panel.lines] == [[0.0, 0.02, 0.05, 0.04, 0.09, 0.12]]
    other = synthetic_run(tmp_path / "beta0.05", goodhart=False)
    fig = write_overlay_report([run, other], ["beta=0", "beta=0.05"], tmp_path / "overlay.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["reward", "held-out accuracy", "KL\n(training)",
                                                   "KL to ref\n(held-out)", "held-out length\n(tokens)"]
    assert [len(line.get_xdata()) for line in fig.axes[2].lines] == [0, 10]  # only beta = 0.05 has TRL's kl
    assert list(fig.axes[3].lines[0].get_ydata()) == [0.0, 0.02, 0.05, 0.04, 0.09, 0.12]


def test_cli_report(tmp_path, capsys):
    run = synthetic_run(tmp_path / "run")
    assert cli_main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert str(run / "report.png") in out and '"best_accuracy": 0.5' in out
    other = synthetic_run(tmp_path / "other")
    assert cli_main(["report", str(run), str(other), "--out", str(tmp_path / "both.png")]) == 0
    assert (tmp_path / "both.png").exists() and (other / "report.json").exists()


def test_load_log_history_prefers_metrics_jsonl(tmp_path):
    run = synthetic_run(tmp_path / "run")
    (run / "trainer_state.json").write_text(json.dumps({"log_history": [{"reward": 5, "step": 1}]}))
    assert len(load_log_history(run)) == 16


def test_heldout_proxy_is_drawn_on_the_reward_panel_and_summarised(tmp_path):
    run = synthetic_run(tmp_path / "run")
    with (run / "metrics.jsonl").open("a") as f:
        for step, cheer in ((0, -0.1), (10, 0.45)):
            f.write(json.dumps({"heldout/accuracy": 0.2, "heldout/proxy/sentiment": cheer, "step": step}) + "\n")
    report = write_report(run)
    line = next(ln for ln in report.figure.axes[0].lines if ln.get_label() == "held-out sentiment (greedy)")
    assert list(line.get_xdata()) == [0, 10] and list(line.get_ydata()) == [-0.1, 0.45]
    assert report.summary["initial_heldout/proxy/sentiment"] == -0.1
    assert report.summary["final_heldout/proxy/sentiment"] == 0.45


def test_overlay_adds_a_panel_per_heldout_proxy(tmp_path):
    runs = []
    for name, cheer in (("beta0.05", 0.2), ("beta0", 0.6)):
        run = synthetic_run(tmp_path / name)
        with (run / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"heldout/proxy/sentiment": -0.1, "step": 0}) + "\n")
            f.write(json.dumps({"heldout/proxy/sentiment": cheer, "step": 10}) + "\n")
        runs.append(run)
    fig = write_overlay_report(runs, ["beta=0.05", "beta=0"], tmp_path / "overlay.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["reward", "held-out accuracy", "KL\n(training)", "held-out length\n(tokens)",
                                                   "held-out\nsentiment"]
    curves = [line for line in fig.axes[4].lines if len(set(line.get_xdata())) > 1]  # not the trigger markers
    assert [list(line.get_ydata()) for line in curves] == [[-0.1, 0.2], [-0.1, 0.6]]


def test_accuracy_band_is_a_wilson_interval_inside_zero_one():
    from trl_lab.report import _accuracy_band, wilson_interval

    assert wilson_interval(1 / 16, 16) == pytest.approx((0.0111, 0.2833), abs=1e-4)  # textbook values
    assert wilson_interval(0.0, 16) == pytest.approx((0.0, 0.1936), abs=1e-4)
    assert wilson_interval(1.0, 16)[1] == 1.0
    entries = [{"step": 0, "heldout/accuracy": 1 / 16, "heldout/accuracy_stderr": (15 / 256 / 16) ** 0.5,
                "heldout/n": 16.0},
               {"step": 4, "heldout/accuracy": 0.0, "heldout/accuracy_stderr": 0.0}]  # an old log without n
    lo, hi = _accuracy_band(entries, [0, 4], [1 / 16, 0.0])
    assert lo[0] == pytest.approx(0.0111, abs=1e-4) and hi[0] == pytest.approx(0.2833, abs=1e-4)
    assert lo[1] == 0.0 and hi[1] == 0.0  # the normal band, clipped: never below 0 (it drew -0.05 for 1/16)


def test_overlay_draws_heldout_length_when_logged(tmp_path):
    """The study's per-arm figure: answers getting longer (padding) or shorter is what moves first."""
    runs = []
    for name, lengths in (("a", (55.0, 40.0)), ("b", (56.0, 11.0))):
        run = synthetic_run(tmp_path / name)
        with (run / "metrics.jsonl").open("a") as f:
            for step, value in zip((0, 10), lengths):
                f.write(json.dumps({"heldout/mean_length": value, "step": step}) + "\n")
        runs.append(run)
    fig = write_overlay_report(runs, ["a", "b"], tmp_path / "overlay.png")
    assert [ax.get_ylabel() for ax in fig.axes][-1] == "held-out length\n(tokens)"
    curves = [line for line in fig.axes[-1].lines if len(set(line.get_xdata())) > 1]
    assert [(line.get_ydata()[0], line.get_ydata()[-1]) for line in curves] == [(55.0, 40.0), (56.0, 11.0)]


def test_the_learning_signal_share_is_grpo_only():
    from trl_lab.report import _summary

    grpo = [{"step": s, "reward": 0.1, "frac_reward_zero_std": z} for s, z in ((1, 1.0), (2, 0.5))]
    assert _summary(grpo, None)["groups_with_signal"] == 0.25
    ppo = [{**e, "frac_reward_zero_std": 1.0, "ppo/value_loss": 0.3} for e in grpo]  # groups of one: always zero
    assert _summary(ppo, None)["groups_with_signal"] is None


def test_an_untriggered_detector_says_why_its_best_step_is_not_the_newest(tmp_path):
    from trl_lab.report import format_summary

    run = synthetic_run(tmp_path / "run", goodhart=False)
    # glr with smoothing 2 after three evaluations: only step 0's smoothed value is final (the demo's case)
    (run / "goodhart.json").write_text(json.dumps({
        "triggered": False, "triggered_step": None, "best_step": 0, "best_gold_smoothed": 0.2222,
        "history": [{"step": 0, "smoothed": 0.2222}, {"step": 10, "smoothed": None}, {"step": 20, "smoothed": None}],
    }))
    summary = write_report(run).summary
    assert summary["goodhart"]["unsmoothed_evals"] == 2
    line = next(x for x in format_summary(summary).splitlines() if "Goodhart detector" in x)
    assert line.strip() == ("Goodhart detector        did not trigger (best step so far 0, smoothed held-out accuracy "
                            "0.222; the last 2 evaluation(s) are not smoothed yet, so they cannot be its best step)")
