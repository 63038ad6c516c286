"""The seed experiments' scripts on a tiny model: reward hacking (proxy on held-out answers) and the KL sweep."""

from __future__ import annotations

import json

import pytest

from tests.helpers import write_tiny_run_config
from trl_lab.report import format_summary, run_summary
from trl_lab.scripts import grpo_gsm8k, kl_sweep


def sentiment_run_config(tmp_path, tiny_model_dir, shared_gsm8k, **extra):
    settings = dict(rewards=[{"name": "sentiment", "kwargs": {"backend": "vader"}}], heldout_size=3,
                    heldout_eval_steps=1, heldout_max_new_tokens=6, max_steps=2,
                    goodhart_proxy_metric="rewards/sentiment/mean")
    return write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, **{**settings, **extra})


def test_reward_hacking_logs_the_proxy_on_heldout_answers_and_summarises(tmp_path, tiny_model_dir, shared_gsm8k):
    config = sentiment_run_config(tmp_path, tiny_model_dir, shared_gsm8k)
    trainer = grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])
    held = [e for e in trainer.state.log_history if "heldout/accuracy" in e]
    assert [e["step"] for e in held] == [0, 1, 2]
    # The sentiment reward scored the very completions accuracy was measured on.
    from trl_lab.rewards.sentiment import SentimentReward

    vader = SentimentReward("vader")
    tables = sorted((tmp_path / "run" / "heldout").glob("step_*.jsonl"))
    last = [json.loads(line) for line in tables[-1].open()]
    assert held[-1]["heldout/proxy/sentiment"] == pytest.approx(
        sum(vader(completions=[r["completion"] for r in last])) / len(last))
    summary = run_summary(tmp_path / "run")
    assert summary["initial_heldout/proxy/sentiment"] == held[0]["heldout/proxy/sentiment"]
    assert summary["final_heldout/proxy/sentiment"] == held[-1]["heldout/proxy/sentiment"]
    assert summary["first_heldout_completion"]["step"] == 0 and summary["last_heldout_completion"]["step"] == 2
    out = format_summary(summary)
    assert "heldout/proxy/sentiment" in out and "Goodhart detector" in out


def test_kl_sweep_runs_each_beta_alike_and_overlays_them(tmp_path, tiny_model_dir, shared_gsm8k):
    config = sentiment_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_eval_steps=2)
    result = kl_sweep.main(["--betas", "0.1", "0", "--sweep_dir", str(tmp_path / "sweep"),
                            "--config", str(config), "--use_cpu", "true"])
    sweep = tmp_path / "sweep"
    assert result["runs"] == [str(sweep / "beta_0.1"), str(sweep / "beta_0")]
    assert (sweep / "kl_sweep.png").stat().st_size > 10_000
    saved = json.loads((sweep / "kl_sweep.json").read_text())
    assert list(saved["summaries"]) == ["beta=0.1", "beta=0"]
    logs = {b: [json.loads(line) for line in (sweep / f"beta_{b}" / "metrics.jsonl").open()] for b in ("0.1", "0")}
    # beta > 0 measures and logs the KL to the reference; TRL skips the reference (and the KL) at beta = 0.
    assert any("kl" in e for e in logs["0.1"]) and not any("kl" in e for e in logs["0"])
    # Everything else is shared: same steps, same held-out cadence, same first (pre-training) held-out answers.
    for b in ("0.1", "0"):
        assert [e["step"] for e in logs[b] if "heldout/accuracy" in e] == [0, 2]
    first = {b: (sweep / f"beta_{b}" / "heldout" / "step_000000.jsonl").read_text() for b in ("0.1", "0")}
    assert first["0.1"] == first["0"]
    assert all(s["steps"] == 2 for s in saved["summaries"].values())
    assert "did not trigger" in format_summary(saved["summaries"]["beta=0"])


def test_kl_sweep_refuses_flags_it_owns(tmp_path):
    with pytest.raises(ValueError, match="--beta is set by the sweep"):
        kl_sweep.main(["--betas", "0.1", "--beta", "0.2"])
    with pytest.raises(ValueError, match="betas must be >= 0"):
        kl_sweep.main(["--betas", "-1"])
