"""Guards around every reward plugin call (issue 14): a timeout naming a plugin that never returns (plain or async),
inputs no plugin can change for the next one, a weighted sum that must stay finite in float32, and dotted paths that
only reach reward plugins."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from datasets import Dataset

import trl_lab.rewards.registry as registry
from tests.helpers import tiny_config
from trl_lab import GRPOConfig, GRPOTrainer, RewardPluginError, build_rewards, completion_text, get_reward
from trl_lab.rewards.registry import Reward, RewardTimeoutError, default_timeout, wrap_reward
from trl_lab.rewards.specs import RewardSpecError, parse_reward_spec

RELEASE = threading.Event()  # lets the stuck plugins below end once a test is over


def never_returns(completions, **kwargs):
    RELEASE.wait(60)
    return [0.0] * len(completions)


async def never_returns_async(completions, **kwargs):
    await asyncio.sleep(60)
    return [0.0] * len(completions)


@pytest.fixture(autouse=True)
def release_stuck_plugins():
    RELEASE.clear()
    yield
    RELEASE.set()


# --------------------------------------------------------------------------- timeouts
def test_a_plugin_that_never_returns_raises_naming_it_after_its_spec_timeout():
    (reward,), _ = build_rewards([{"name": "tests.test_rewards_guards:never_returns", "timeout": 0.3}])
    assert reward.timeout == 0.3
    start = time.monotonic()
    with pytest.raises(RewardTimeoutError, match=r"'never_returns' did not return within its timeout of 0\.3 s "
                                                 r"\(a batch of 2 completions\).*cannot be killed"):
        reward(prompts=["p", "q"], completions=["a", "b"])
    assert time.monotonic() - start < 5  # no per-sample re-runs after a timeout


def test_an_async_plugin_that_never_returns_is_cancelled_and_named():
    reward = wrap_reward("judge", never_returns_async)
    reward.timeout = 0.2

    async def run():
        with pytest.raises(RewardTimeoutError, match=r"'judge' did not return within its timeout of 0\.2 s"):
            await reward(prompts=["p"], completions=["a"])
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(run()) == []  # the plugin's coroutine was cancelled, not left pending


def test_global_default_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(registry.TIMEOUT_ENV, raising=False)
    assert default_timeout() == 600.0
    monkeypatch.setenv(registry.TIMEOUT_ENV, "0.25")
    reward = Reward("stuck", never_returns)
    assert reward.timeout == 0.25
    with pytest.raises(RewardTimeoutError, match="'stuck'.*TRL_LAB_REWARD_TIMEOUT"):
        reward(completions=["a"])
    (spec_wins,), _ = build_rewards([{"name": "gsm8k_format", "timeout": 30}])
    assert spec_wins.timeout == 30.0
    (off,), _ = build_rewards([{"name": "gsm8k_format", "timeout": 0}])
    assert off.timeout is None and off(completions=["#### 4"]) == [1.0]  # no timeout: called in the caller's thread
    monkeypatch.setenv(registry.TIMEOUT_ENV, "none")
    assert default_timeout() is None
    monkeypatch.setenv(registry.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=r"\$TRL_LAB_REWARD_TIMEOUT must be a number of seconds"):
        default_timeout()


def test_the_config_key_reward_timeout_is_the_runs_default_and_a_spec_still_wins(tmp_path, tiny_model_dir):
    from tests.test_grpo_e2e import gsm_rows

    args = tiny_config(GRPOConfig, tmp_path, num_generations=2, reward_timeout=7.5,
                       rewards=["gsm8k", {"name": "gsm8k_format", "timeout": 30}])
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows())
    assert [f.timeout for f in trainer.reward_funcs] == [7.5, 30.0]
    (off,), _ = build_rewards(["gsm8k"], default_timeout=0)
    assert off.timeout is None
    with pytest.raises(ValueError, match="reward_timeout must be a finite number of seconds"):
        tiny_config(GRPOConfig, tmp_path, num_generations=2, reward_timeout=-3, rewards=["gsm8k"])


@pytest.mark.parametrize("bad", [-1, "nan", "later", True])
def test_a_bad_timeout_in_a_spec_names_the_reward(bad):
    with pytest.raises(RewardSpecError, match="rewards: timeout of reward 'gsm8k'"):
        parse_reward_spec({"name": "gsm8k", "timeout": bad})


def test_timed_call_keeps_results_errors_and_the_callers_grad_mode():
    seen = []

    def records(completions, **kwargs):
        seen.append((threading.current_thread() is threading.main_thread(), torch.is_grad_enabled()))
        return [float(len(completion_text(c))) for c in completions]

    reward = Reward("records", records, timeout=10)
    with torch.no_grad():
        assert reward(completions=["ab", "c"]) == [2.0, 1.0]
    assert seen == [(False, False)]  # in a worker thread, with the caller's no_grad
    fragile = Reward("fragile", lambda completions, answer, **kw: [1 / int(a) for a in answer], timeout=10)
    with pytest.raises(RewardPluginError, match="'fragile' raised ZeroDivisionError on sample 1"):
        fragile(completions=["a", "b"], answer=["1", "0"])


# --------------------------------------------------------------------------- input isolation
def overwrites_inputs(completions, answer, **kwargs):
    """A plugin that rewrites what it was given: every completion becomes the right answer."""
    for i, a in enumerate(answer):
        if isinstance(completions[i], list):
            completions[i][0]["content"] = f"#### {a}"
        else:
            completions[i] = f"#### {a}"
    answer[:] = ["0"] * len(answer)
    return [0.0] * len(completions)


def overwrites_completions(completions, answer, **kwargs):
    completions[:] = [f"#### {a}" for a in answer]
    return [0.0] * len(completions)


@pytest.mark.parametrize("conversational", [False, True])
def test_a_plugin_that_mutates_its_inputs_changes_nothing_for_the_next(conversational):
    funcs, _ = build_rewards(["tests.test_rewards_guards:overwrites_inputs", "gsm8k"])
    texts = ["no idea", "#### 7"]
    completions = [[{"role": "assistant", "content": t}] for t in texts] if conversational else list(texts)
    answer = ["4", "7"]
    before = repr(completions), list(answer)
    rewards = [f(prompts=["p", "q"], completions=completions, answer=answer, completion_ids=[[1, 2], [3]])
               for f in funcs]
    assert rewards == [[0.0, 0.0], [0.0, 1.0]]  # gsm8k saw the real completions and answers
    assert (repr(completions), answer) == before


def test_trainer_rewards_and_metrics_are_immune_to_a_mutating_plugin(tmp_path, tiny_model_dir):
    """TRL's own _calculate_rewards passes one shared list to every plugin; with the plugin that overwrites the
    completions first, `rewards/gsm8k/mean` read 1.0 while no completion was right."""
    data = Dataset.from_list([{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "What is 3 + 4?", "answer": "7"}])
    args = tiny_config(GRPOConfig, tmp_path, num_generations=2, per_device_train_batch_size=2,
                       rewards=["tests.test_rewards_guards:overwrites_completions", "gsm8k"])
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=data)
    inputs = [dict(row) for row in data]
    completions = ["I think 5", "I think 6"]
    per_func = trainer._calculate_rewards(inputs, [r["prompt"] for r in inputs], completions, [[1], [2]])
    assert per_func[:, 1].tolist() == [0.0, 0.0]  # the gold checker was not fooled (it read 1.0, 1.0)
    assert completions == ["I think 5", "I think 6"] and [r["answer"] for r in inputs] == ["4", "7"]


# --------------------------------------------------------------------------- the weighted sum
def big(completions, **kwargs):
    return [2e38 for _ in completions]


def also_big(completions, **kwargs):
    return [2e38 for _ in completions]


def test_a_weighted_sum_of_finite_rewards_that_overflows_names_the_plugins():
    """Each 2e38 is a finite float32; TRL's float32 sum of the two is inf (`reward: inf`, NaN advantages)."""
    funcs, weights = build_rewards(["tests.test_rewards_guards:big", "gsm8k_format=0.5",
                                    "tests.test_rewards_guards:also_big"])
    completions = ["#### 1", "x"]
    assert torch.isinf(torch.tensor([[2e38, 1.0, 2e38]], dtype=torch.float32).nansum(dim=1)).all()  # TRL's sum
    assert funcs[0](completions=completions) == [2e38, 2e38]
    assert funcs[1](completions=completions) == [1.0, 0.0]
    with pytest.raises(RewardPluginError, match=r"weighted rewards of sample 0 overflow float32.*'big' 2e\+38 x 1 \+ "
                                                r"'gsm8k_format' 1 x 0\.5 \+ 'also_big' 2e\+38 x 1.*\['also_big', "
                                                r"'big', 'gsm8k_format'\]"):
        funcs[2](completions=completions)
    # another batch of the same plugins that stays in range is fine
    small = ["#### 1"]
    assert [f(completions=small) for f in funcs[:2]] == [[2e38], [1.0]]


def test_a_reward_beyond_float32_is_refused_even_at_weight_one():
    """torch.tensor(1e39, dtype=float32) is inf: TRL's rewards_per_func is float32."""
    (reward,), _ = build_rewards(["tests.test_job_guards:huge_reward"])
    with pytest.raises(RewardPluginError, match=r"'huge_reward' returned 1e\+308 for sample 0.*overflows float32"):
        reward(completions=["c"])


# --------------------------------------------------------------------------- dotted paths
@pytest.mark.parametrize("path", ["os:system", "subprocess:run", "subprocess:Popen", "builtins:eval",
                                  "shutil:rmtree", "tests.test_rewards_guards:not_a_plugin"])
def test_a_dotted_path_to_something_that_is_not_a_reward_plugin_is_not_called(path, monkeypatch):
    calls = []
    monkeypatch.setattr("os.system", lambda *a, **k: calls.append(a) or 0)
    with pytest.raises(RewardPluginError, match=rf"'{path}'.*is not a reward plugin, so it is not called"):
        get_reward(path, command="touch /tmp/pwned")
    assert calls == []


def not_a_plugin(text):  # a factory-shaped function nobody registered
    return lambda completions, **kwargs: [0.0] * len(completions)


def test_genuine_dotted_path_plugins_still_work():
    assert get_reward("tests.test_rewards_guards:big")(completions=["a"]) == [2e38]  # a reward function
    assert get_reward("tests.test_registry:Threshold", minimum=1)(completions=["", "x"]) == [0.0, 1.0]  # a class
    assert get_reward("tests.test_registry:make_scaled", scale=0.5)(completions=["abcd"]) == [2.0]  # registered
