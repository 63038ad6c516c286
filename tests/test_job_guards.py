"""Bad job inputs a new user hits, refused early with the culprit named (issue 14's first items), and the run log
every job writes."""

from __future__ import annotations

import json

import pytest

from tests.helpers import tiny_config, write_tiny_run_config
from tests.test_grpo_e2e import gsm_rows
from trl_lab import GRPOConfig, GRPOTrainer, parse_reward_specs
from trl_lab.rewards.specs import RewardSpec
from trl_lab.scripts import grpo_gsm8k


@pytest.mark.parametrize("rewards", ["gsm8k", {"name": "gsm8k"}])
def test_a_single_reward_spec_where_a_list_is_expected_means_that_one(rewards, tmp_path):
    """`rewards: gsm8k` in YAML used to say "unknown reward 'g'"; `rewards: {name: gsm8k}` "unknown reward 'name'"."""
    assert parse_reward_specs(rewards) == [RewardSpec("gsm8k")]
    config = tiny_config(GRPOConfig, tmp_path, rewards=rewards, num_generations=2)
    assert config.rewards == [{"name": "gsm8k", "weight": 1.0, "kwargs": {}}]


def test_max_steps_zero_and_an_empty_training_set_are_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="max_steps is 0"):
        tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2, max_steps=0)
    with pytest.raises(ValueError, match="the training set is empty"):
        GRPOTrainer(model=str(tiny_model_dir), train_dataset=gsm_rows(0),
                    args=tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2))


@pytest.mark.parametrize("flag, value, message", [
    ("--heldout_size", "-5", "heldout_size must be >= 0"),
    ("--heldout_eval_steps", "0", "heldout_eval_steps must be >= 1"),
    ("--train_size", "0", "train_size must be >= 1"),
    ("--heldout_kl_items", "0", "heldout_kl_items must be >= 1"),
])
def test_bad_heldout_and_data_sizes_are_refused_naming_the_key(flag, value, message, tmp_path, tiny_model_dir,
                                                                shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k)
    with pytest.raises(ValueError, match=message):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true", flag, value])


def test_a_heldout_size_larger_than_the_test_split_is_refused_before_the_model_loads(tmp_path, tiny_model_dir,
                                                                                      monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"What is {i} + {split}?", "answer": f"#### {i}"}) + "\n" for i in range(n)))
    monkeypatch.setattr(grpo_gsm8k, "GRPOTrainer", lambda *a, **k: pytest.fail("the model loaded first"))
    config = write_tiny_run_config(tmp_path, tiny_model_dir, data, heldout_size=10)
    with pytest.raises(ValueError, match=r"heldout_size is 10, but the 'test' split has 3 items"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])


def test_a_run_without_a_heldout_set_still_writes_its_log_and_report(tmp_path, tiny_model_dir, shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_size=0)
    grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").stat().st_size > 0 and (run / "report.png").exists()
