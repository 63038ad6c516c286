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


def test_a_goodhart_proxy_metric_typo_stops_at_the_first_training_log(tmp_path, tiny_model_dir, shared_gsm8k):
    """It used to switch the Goodhart rule off for the whole run after one vague warning."""
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_size=2, heldout_max_new_tokens=4,
                                   goodhart_proxy_metric="rewards/gsm8kk/mean")
    with pytest.raises(ValueError, match=r"proxy_metric 'rewards/gsm8kk/mean' is not in the training log; the reward "
                                         r"metrics logged are \[.*'rewards/gsm8k/mean'.*\]"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])


def test_a_non_utf8_data_file_names_file_and_line_and_a_bom_is_accepted(tmp_path):
    from trl_lab.data.gsm8k import load_gsm8k

    good = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}).encode()
    (tmp_path / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + good + b"\n" + good.replace(b"1 + 1", b"2 + 0") + b"\n")
    assert load_gsm8k("local", "train", path=tmp_path)["answer"] == ["2", "2"]
    (tmp_path / "train.jsonl").write_bytes(good + b"\n" + "{\"question\": \"Caf\xe9\"}".encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"line 2 of .*train.jsonl is not UTF-8"):
        load_gsm8k("local", "train", path=tmp_path)


def test_an_unwritable_output_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import trl

    monkeypatch.setattr(trl.GRPOTrainer, "__init__", lambda *a, **k: pytest.fail("the model loaded first"))
    (tmp_path / "a_file").write_text("not a folder")
    args = tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2)
    args.output_dir = str(tmp_path / "a_file" / "run")
    with pytest.raises(ValueError, match=r"output_dir .*a_file/run' is not writable"):
        GRPOTrainer(model="unused", args=args, train_dataset=gsm_rows())


def test_a_missing_model_path_or_a_near_miss_of_an_embedded_name_is_named(tmp_path):
    from trl_lab.embedded_model import resolve_model_path

    with pytest.raises(ValueError, match=r"model '\./no/such/model': no such file or directory"):
        resolve_model_path("./no/such/model")
    with pytest.raises(ValueError, match=r"not an embedded model name \(did you mean 'smollm2-135m-instruct'\?\)"):
        resolve_model_path("smollm2-135m-instruc")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # hub
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # a local folder as it is


@pytest.mark.parametrize("key, value", [("beta", float("nan")), ("learning_rate", float("inf")),
                                        ("vf_coef", float("nan"))])
def test_non_finite_hyperparameters_are_refused_naming_the_key(key, value, tmp_path):
    from trl_lab import PPOConfig

    config_cls = PPOConfig if key == "vf_coef" else GRPOConfig
    with pytest.raises(ValueError, match=f"{key} must be a finite number, got {value}"):
        tiny_config(config_cls, tmp_path, rewards=["gsm8k"], num_generations=2, **{key: value})


def huge_reward(completions, **kwargs):
    return [1e308 for _ in completions]


def test_a_weighted_reward_that_overflows_is_an_error_naming_the_plugin():
    """A finite 1e308 reward times weight 10 logged `reward: inf` with loss 0, and training went on."""
    from trl_lab import build_rewards

    (reward,), weights = build_rewards([{"name": "tests.test_job_guards:huge_reward", "weight": 10.0}])
    assert weights == [10.0] and reward.weight == 10.0
    with pytest.raises(Exception, match=r"'huge_reward' returned 1e\+308 for sample 0, which times its weight 10"):
        reward(prompts=["p"], completions=["c"])
    (plain,), _ = build_rewards([{"name": "tests.test_job_guards:huge_reward", "weight": 1.0}])
    assert plain(prompts=["p"], completions=["c"]) == [1e308]
