"""Reward specs and the GRPO config, from YAML and from the command line (through TRL's TrlParser)."""

from __future__ import annotations

import pytest
import yaml
from trl import ModelConfig, TrlParser

from trl_lab import GRPOConfig, RewardPluginError, RewardSpec, build_rewards, parse_reward_specs
from trl_lab.rewards.specs import parse_reward_spec
from trl_lab.scripts.grpo_gsm8k import GSM8KScriptArguments


def parse(argv, tmp_path=None, config=None):
    if config is not None:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = ["--config", str(path), *argv]
    parser = TrlParser((GSM8KScriptArguments, GRPOConfig, ModelConfig))
    return parser.parse_args_and_config(argv)


BASE = ["--output_dir", "out", "--report_to", "none", "--use_cpu", "true"]


@pytest.mark.parametrize(
    "item, expected",
    [
        ("gsm8k", RewardSpec("gsm8k", 1.0, {})),
        ("gsm8k_format=0.2", RewardSpec("gsm8k_format", 0.2, {})),
        ("pkg.mod:make=0.5", RewardSpec("pkg.mod:make", 0.5, {})),
        ("{name: length, weight: -0.3, kwargs: {target: 200}}", RewardSpec("length", -0.3, {"target": 200})),
        ({"name": "gsm8k"}, RewardSpec("gsm8k", 1.0, {})),
        ({"name": "x", "weight": "2", "kwargs": None}, RewardSpec("x", 2.0, {})),
    ],
)
def test_spec_forms(item, expected):
    assert parse_reward_spec(item) == expected


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("gsm8k=heavy", "weight of reward 'gsm8k' must be a number"),
        ({"name": "gsm8k", "weigth": 1}, r"unknown key\(s\) \['weigth'\]"),
        ({"weight": 1}, "has no 'name'"),
        ({"name": "a", "kwargs": [1]}, "'kwargs' of reward 'a' must be a mapping"),
        ("gsm8k=inf", "must be finite"),
        (3, "must be a mapping"),
    ],
)
def test_bad_specs_name_the_config_key(item, fragment):
    with pytest.raises(ValueError, match=fragment) as err:
        parse_reward_spec(item)
    assert str(err.value).startswith("rewards:")


def test_duplicate_spec_is_an_error():
    with pytest.raises(ValueError, match="listed twice"):
        parse_reward_specs(["gsm8k", "gsm8k=2"])


def test_build_rewards_gives_trl_funcs_and_weights():
    funcs, weights = build_rewards(["gsm8k", "gsm8k_format=0.2"])
    assert [f.__name__ for f in funcs] == ["gsm8k", "gsm8k_format"]
    assert weights == [1.0, 0.2]


def test_same_plugin_twice_with_different_options_logs_apart():
    funcs, _ = build_rewards([{"name": "tests.test_registry:Threshold", "kwargs": {"minimum": 1}},
                              {"name": "tests.test_registry:Threshold", "kwargs": {"minimum": 5}}])
    assert [f.__name__ for f in funcs] == ["Threshold", "Threshold#2"]


def test_unknown_reward_in_config_names_key_and_suggests():
    with pytest.raises(RewardPluginError, match=r"rewards: unknown reward 'gsm8': Did you mean|rewards: unknown reward 'gsm8'"):
        build_rewards(["gsm8"])


def test_yaml_config(tmp_path):
    config = {"rewards": [{"name": "gsm8k", "weight": 1.0}, {"name": "gsm8k_format", "weight": 0.2}],
              "dataset_source": "gsm_symbolic", "train_size": 12, "model_name_or_path": "smollm2-135m-instruct",
              "use_peft": True}
    script, train, model = parse(BASE, tmp_path, config)
    assert train.rewards == [{"name": "gsm8k", "weight": 1.0, "kwargs": {}},
                             {"name": "gsm8k_format", "weight": 0.2, "kwargs": {}}]
    assert script.dataset_source == "gsm_symbolic" and script.train_size == 12
    assert model.use_peft and model.model_name_or_path == "smollm2-135m-instruct"
    train.to_json_string()  # stays serialisable for loggers and checkpoints


def test_cli_rewards_override_yaml(tmp_path):
    config = {"rewards": [{"name": "gsm8k"}]}
    _, train, _ = parse([*BASE, "--rewards", "gsm8k", "gsm8k_format=0.5"], tmp_path, config)
    assert [(r["name"], r["weight"]) for r in train.rewards] == [("gsm8k", 1.0), ("gsm8k_format", 0.5)]


def test_cli_yaml_mapping_spec():
    _, train, _ = parse([*BASE, "--rewards", "{name: gsm8k, weight: 2}"])
    assert train.rewards == [{"name": "gsm8k", "weight": 2.0, "kwargs": {}}]


def test_rewards_and_reward_weights_together_is_an_error():
    with pytest.raises(ValueError, match="both `rewards` and `reward_weights`"):
        parse([*BASE, "--rewards", "gsm8k", "--reward_weights", "1.0"])


def test_bad_dataset_source_is_rejected():
    with pytest.raises(SystemExit):
        parse([*BASE, "--dataset_source", "imaginary"])


def test_shipped_example_configs_parse():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "examples" / "configs").glob("grpo_*.yaml"))
    assert configs, "no example configs found"
    for path in configs:
        parser = TrlParser((GSM8KScriptArguments, GRPOConfig, ModelConfig))
        _, train, model = parser.parse_args_and_config(["--config", str(path), "--use_cpu", "true", "--bf16", "false"])
        funcs, weights = build_rewards(train.rewards)
        assert funcs and len(funcs) == len(weights), path
        assert model.model_name_or_path, path


def test_config_rewards_are_typed_spec_mappings_and_cli_errors_keep_their_message(capsys):
    from trl_lab.rewards.specs import RewardSpecDict, RewardSpecError

    _, train, _ = parse([*BASE, "--rewards", "gsm8k", "gsm8k_format=0.5"])
    assert all(type(r) is RewardSpecDict for r in train.rewards)
    assert "RewardSpecDict" in str(GRPOConfig.__dataclass_fields__["rewards"].type)
    with pytest.raises(SystemExit):
        parse([*BASE, "--rewards", "gsm8k_format=lots"])
    err = capsys.readouterr().err
    assert "weight of reward 'gsm8k_format' must be a number, got 'lots'" in err  # not argparse's "invalid value"
    with pytest.raises(RewardSpecError, match="must be finite") as exc:
        RewardSpecDict("gsm8k=inf")
    assert isinstance(exc.value, ValueError)


def test_gsm8k_job_arguments_are_trl_script_arguments():
    import trl

    script, _, _ = parse([*BASE, "--dataset_name", "me/my-gsm8k", "--dataset_test_split", "validation"])
    assert isinstance(script, trl.ScriptArguments)
    assert (script.dataset_name, script.dataset_test_split) == ("me/my-gsm8k", "validation")
    assert script.dataset_kwargs()["hub_id"] == "me/my-gsm8k" and script.dataset_kwargs()["hub_config"] == "main"


def test_reasoning_gym_task_flags():
    script, _, _ = parse([*BASE, "--dataset_source", "reasoning_gym", "--dataset_task", "chain_sum",
                          "--dataset_task_config", '{"min_terms": 2, "max_terms": 2}'])
    assert script.dataset_kwargs()["task"] == "chain_sum"
    assert script.dataset_kwargs()["task_config"] == {"min_terms": 2, "max_terms": 2}
    with pytest.raises(ValueError, match="dataset_task goes with dataset_source: reasoning_gym"):
        parse([*BASE, "--dataset_task", "chain_sum"])
    with pytest.raises(ValueError, match="dataset_task goes with dataset_source: reasoning_gym"):
        parse([*BASE, "--dataset_source", "reasoning_gym"])
    with pytest.raises(ValueError, match="dataset_task_config is not JSON"):
        parse([*BASE, "--dataset_source", "reasoning_gym", "--dataset_task", "chain_sum",
               "--dataset_task_config", "{min_terms: 2"])
