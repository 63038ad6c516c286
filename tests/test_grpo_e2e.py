"""GRPO end to end on a tiny random model: rewards from plugins, metrics per reward, early errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from datasets import Dataset

from tests.helpers import launch_two_cpu_processes, tiny_config, write_tiny_run_config
from trl_lab import GRPOConfig, GRPOTrainer, RewardPluginError

REPO = Path(__file__).resolve().parents[1]


def gsm_rows(n: int = 8) -> Dataset:
    rows = [
        {"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)} for i in range(n)
    ]
    return Dataset.from_list(rows)


def tiny_args(tmp_path, **overrides) -> GRPOConfig:
    defaults = dict(rewards=["gsm8k", "gsm8k_format=0.2"], num_generations=2, max_completion_length=12, beta=0.04)
    return tiny_config(GRPOConfig, tmp_path, **{**defaults, **overrides})


def test_grpo_two_steps_logs_each_reward(tmp_path, tiny_model_dir):
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=tiny_args(tmp_path), train_dataset=gsm_rows())
    assert trainer.reward_func_names == ["gsm8k", "gsm8k_format"]
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 0.2])
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    for entry in logs:
        for key in ("rewards/gsm8k/mean", "rewards/gsm8k_format/mean", "reward", "loss", "kl"):
            assert key in entry, f"{key} missing from {sorted(entry)}"
            assert math.isfinite(entry[key]), (key, entry[key])
        # A random model never writes a correct '#### N' line: both rewards are exactly zero.
        assert entry["rewards/gsm8k/mean"] == 0.0 and entry["rewards/gsm8k_format/mean"] == 0.0
        assert entry["reward"] == pytest.approx(entry["rewards/gsm8k/mean"] + 0.2 * entry["rewards/gsm8k_format/mean"])


def test_weighted_sum_reaches_trl(tmp_path, tiny_model_dir):
    """Constant plugins make TRL's weighted reward exactly predictable: 2*0.5 + (-1)*1.0 = 0."""
    args = tiny_args(tmp_path, rewards=["tests.test_grpo_e2e:half=2", "tests.test_grpo_e2e:one=-1"], max_steps=1)
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows())
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "reward" in e)
    assert entry["rewards/half/mean"] == 0.5 and entry["rewards/one/mean"] == 1.0
    assert entry["reward"] == pytest.approx(0.0)


def half(completions, **kwargs):
    return [0.5] * len(completions)


def one(completions, **kwargs):
    return [1.0] * len(completions)


def exploding(completions, **kwargs):
    return [float("nan")] * len(completions)


def test_missing_dataset_column_fails_before_loading(tmp_path, tiny_model_dir):
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}], "solution": "3"}] * 4)
    with pytest.raises(ValueError, match=r"reward plugin 'gsm8k' needs dataset column\(s\) \['answer'\]"):
        GRPOTrainer(model=str(tiny_model_dir), args=tiny_args(tmp_path), train_dataset=rows)


def test_nan_reward_stops_training_naming_plugin(tmp_path, tiny_model_dir):
    args = tiny_args(tmp_path, rewards=["gsm8k", "tests.test_grpo_e2e:exploding"], max_steps=1)
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows())
    with pytest.raises(RewardPluginError, match="'exploding' returned nan for sample 0"):
        trainer.train()


def test_plain_callables_are_wrapped(tmp_path, tiny_model_dir):
    args = tiny_args(tmp_path, rewards=None)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[half], args=args, train_dataset=gsm_rows())
    assert trainer.reward_func_names == ["half"]
    assert trainer.reward_funcs[0](completions=["a"]) == [0.5]


def test_rewards_and_reward_funcs_together_is_an_error(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="either `reward_funcs` or `args.rewards`"):
        GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[half], args=tiny_args(tmp_path), train_dataset=gsm_rows())


def test_gsm8k_job_with_lora_on_local_gsm8k(tmp_path, tiny_model_dir, shared_gsm8k, capsys):
    from trl_lab.scripts import grpo_gsm8k

    config = write_tiny_run_config(
        tmp_path, tiny_model_dir, shared_gsm8k, heldout_size=4, heldout_eval_steps=1, heldout_max_new_tokens=6
    )
    trainer = grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true", "--heldout_table_size", "3"])
    assert type(trainer.model).__name__.startswith("Peft")
    run = tmp_path / "run"
    assert (run / "adapter_config.json").exists()
    entry = next(e for e in trainer.state.log_history if "reward" in e)
    assert "rewards/gsm8k/mean" in entry and math.isfinite(entry["loss"])
    # The watchdogs are on: held-out accuracy before the first step and after the last, the detector listening.
    heldout = [e for e in trainer.state.log_history if "heldout/accuracy" in e]
    assert [e["step"] for e in heldout] == [0, 1]
    assert all(e["heldout/n"] == 4 and 0.0 <= e["heldout/accuracy"] <= 1.0 for e in heldout)
    names = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert {"HeldOutAccuracyCallback", "GoodhartCallback", "HealthMonitorCallback", "MetricsLoggerCallback"} <= set(names)
    assert (run / "metrics.jsonl").exists() and (run / "report.png").exists()
    report = json.loads((run / "goodhart.json").read_text())
    assert "health" in report  # the health monitor's verdict beside Goodhart's
    assert report["rule"]["rule"] == "glr" and report["rule"]["z_threshold"] == 4.15  # the default drop rule
    assert len((run / "heldout" / "step_000001.jsonl").read_text().splitlines()) == 3  # --heldout_table_size
    # The job ends with the before/after summary a newcomer reads: reward, learning signal, accuracy, style.
    out = capsys.readouterr().out
    for line in ("reward (training)", "learning signal", "held-out accuracy", "heldout/format_rate",
                 "first held-out answer"):
        assert line in out, line


def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_model_dir, shared_gsm8k):
    """`accelerate launch --num_processes 2` on CPU: both ranks train, rank 0 saves."""
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k)
    out = launch_two_cpu_processes(
        REPO / "examples" / "grpo_gsm8k.py", "--config", str(config), "--max_steps", "2", cwd=tmp_path
    )
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()
    assert "after 2 steps on 2 process(es)" in out.stdout
