"""The reward plugin registry: three ways in, wrapping, and error messages."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import trl_lab.rewards.registry as registry
from trl_lab import RewardPluginError, completion_text, get_reward, list_rewards, register_reward

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_registry():
    """Each test registers its own plugins; restore the registry afterwards."""
    registry._load_builtins()  # snapshot with the built-ins in it (their module is imported only once)
    saved = dict(registry._REGISTRY)
    saved_ep = registry._ENTRY_POINTS_LOADED
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(saved)
    registry._ENTRY_POINTS_LOADED = saved_ep


# --- module-level plugins used through dotted paths -------------------------------------------------


def count_digits(completions, **kwargs):
    return [float(sum(ch.isdigit() for ch in completion_text(c))) for c in completions]


@register_reward("test_registry_scaled")  # a factory function: reachable by dotted path once registered
def make_scaled(scale: float = 2.0):
    def scaled(completions, **kwargs):
        return [scale * len(completion_text(c)) for c in completions]

    return scaled


class Threshold:
    def __init__(self, minimum: int):
        self.minimum = minimum

    def __call__(self, completions, **kwargs):
        return [1.0 if len(completion_text(c)) >= self.minimum else 0.0 for c in completions]


# --- built-ins and the decorator --------------------------------------------------------------------


def test_builtins_are_listed():
    names = list_rewards()
    assert {"gsm8k", "gsm8k_format"} <= set(names)
    assert names == sorted(names)


def test_decorated_function_is_registered_and_wrapped():
    @register_reward("shouting")
    def shouting(completions, **kwargs):
        return [1.0 if completion_text(c).isupper() else 0.0 for c in completions]

    reward = get_reward("shouting")
    assert reward.__name__ == "shouting"  # TRL logs rewards/shouting/mean
    assert "shouting" in list_rewards()
    plain = reward(prompts=["p", "p"], completions=["HI", "hi"])
    chat = reward(prompts=["p"], completions=[[{"role": "assistant", "content": "HEY"}]])
    assert plain == [1.0, 0.0]
    assert chat == [1.0]


def test_options_are_bound_to_reward_functions():
    @register_reward("bonus")
    def bonus(completions, amount: float = 1.0, **kwargs):
        return [amount for _ in completions]

    assert get_reward("bonus", amount=0.25)(completions=["a", "b"]) == [0.25, 0.25]


def test_unknown_option_names_the_plugin_and_the_key():
    @register_reward("strict")
    def strict(completions, amount: float = 1.0):
        return [amount for _ in completions]

    with pytest.raises(RewardPluginError, match=r"'strict'.*\['amonut'\]"):
        get_reward("strict", amonut=2)


def test_factory_class_is_called_with_options():
    register_reward("threshold")(Threshold)
    reward = get_reward("threshold", minimum=3)
    assert reward(completions=["ab", "abcd"]) == [0.0, 1.0]
    with pytest.raises(RewardPluginError, match="threshold"):
        get_reward("threshold")  # missing required option


def test_same_name_twice_from_different_code_is_an_error():
    register_reward("dup")(count_digits)
    with pytest.raises(RewardPluginError, match="already registered"):
        register_reward("dup")(make_scaled)


def test_unknown_name_lists_available_and_closest_match():
    with pytest.raises(RewardPluginError) as err:
        get_reward("gsm8k_fromat")
    msg = str(err.value)
    assert "Did you mean 'gsm8k_format'" in msg
    assert "gsm8k" in msg and "Available" in msg


# --- dotted paths ------------------------------------------------------------------------------------


def test_dotted_path_reward_function():
    reward = get_reward("tests.test_registry:count_digits")
    assert reward.__name__ == "count_digits"
    assert reward(completions=["a1b22", "none"]) == [3.0, 0.0]


def test_dotted_path_factory_function_and_class():
    assert get_reward("tests.test_registry:make_scaled", scale=0.5)(completions=["abcd"]) == [2.0]
    assert get_reward("tests.test_registry:Threshold", minimum=1)(completions=["", "x"]) == [0.0, 1.0]
    with pytest.raises(RewardPluginError, match="'tests.test_registry:unregistered_factory'.*is not a reward plugin"):
        get_reward("tests.test_registry:unregistered_factory", scale=0.5)


def unregistered_factory(scale: float = 2.0):
    return make_scaled(scale)


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        ("tests.test_registry:missing", "has no attribute 'missing'"),
        ("tests.test_registry:", "must look like"),
    ],
)
def test_bad_dotted_paths(path, fragment):
    with pytest.raises(RewardPluginError, match=fragment):
        get_reward(path)


# --- the wrapper's checks -----------------------------------------------------------------------------


def test_exception_names_plugin_and_failing_sample():
    def fragile(completions, answer, **kwargs):
        return [1.0 / int(a) for a in answer]

    reward = registry.Reward("fragile", fragile)
    with pytest.raises(RewardPluginError, match=r"'fragile' raised ZeroDivisionError on sample 2"):
        reward(prompts=["p"] * 3, completions=["a", "b", "c"], answer=["1", "2", "0"])


@pytest.mark.parametrize(
    "output, fragment",
    [
        ([1.0], "returned 1 rewards for 2 completions"),
        ([1.0, math.nan], "returned nan for sample 1"),
        ([math.inf, 0.0], "returned inf for sample 0"),
        (["1", 0.0], "returned '1' \\(str\\) for sample 0"),
        (0.5, "returned float"),
    ],
)
def test_invalid_outputs_name_the_plugin(output, fragment):
    reward = registry.Reward("bad", lambda completions, **kw: output)
    with pytest.raises(RewardPluginError, match=rf"'bad'.*{fragment}|{fragment}.*'bad'|'bad' {fragment}"):
        reward(completions=["x", "y"])


def test_none_means_not_applicable_and_is_kept():
    reward = registry.Reward("partial", lambda completions, **kw: [None, 1])
    assert reward(completions=["x", "y"]) == [None, 1.0]


def test_numpy_and_tensor_outputs_are_accepted():
    import numpy as np
    import torch

    assert registry.Reward("np", lambda completions, **kw: np.array([0.5, 1.0]))(completions=["a", "b"]) == [0.5, 1.0]
    assert registry.Reward("t", lambda completions, **kw: torch.tensor([2.0]))(completions=["a"]) == [2.0]


def test_required_columns_come_from_the_signature():
    def needs(completions, answer, difficulty, bonus=1.0, **kwargs):
        return [0.0] * len(completions)

    assert registry.Reward("needs", needs).required_columns() == ["answer", "difficulty"]
    assert get_reward("gsm8k").required_columns() == ["answer"]
    assert get_reward("tests.test_registry:Threshold", minimum=1).required_columns() == []


# --- entry points from an installed distribution -----------------------------------------------------


def test_entry_point_plugin_is_discovered_once_installed(tmp_path):
    """Install examples/custom_reward_plugin into a fresh target dir and look it up by name."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO / "examples" / "custom_reward_plugin")],
        check=True,
        capture_output=True,
    )
    script = textwrap.dedent(
        """
        from trl_lab import get_reward, list_rewards
        names = list_rewards()
        assert "no_hedging" in names and "keyword" in names, names
        hedge = get_reward("no_hedging")
        print(hedge.__name__, hedge(completions=["It is 4.", "maybe 4 or 5"]))
        kw = get_reward("keyword", word="Therefore", bonus=0.5)
        print(kw.__name__, kw(completions=[[{"role": "assistant", "content": "therefore 4"}], "4"]))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["no_hedging [1.0, 0.0]", "keyword [0.5, 0.0]"]


def test_broken_entry_point_fails_only_when_used(monkeypatch):
    import importlib.metadata as md

    broken = md.EntryPoint(name="broken_plugin", value="no_such_pkg_abc:fn", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda group=None: [broken] if group == registry.ENTRY_POINT_GROUP else [])
    registry._ENTRY_POINTS_LOADED = False
    assert "broken_plugin" in list_rewards()  # listing does not import it
    assert get_reward("gsm8k").__name__ == "gsm8k"  # other plugins unaffected
    with pytest.raises(RewardPluginError, match="'broken_plugin'.*no_such_pkg_abc:fn.*failed to import"):
        get_reward("broken_plugin")


def test_async_plugins_stay_async_for_trl_and_are_checked():
    import asyncio

    from trl.trainer.utils import is_async_callable

    async def remote_judge(completions, answer, **kwargs):
        return [1.0 if completion_text(c) == a else 0.0 for c, a in zip(completions, answer)]

    async def flaky(completions, **kwargs):
        if any(completion_text(c) == "boom" for c in completions):
            raise ConnectionError("judge unreachable")
        return [0.0] * len(completions)

    judge = registry.wrap_reward("judge", remote_judge)
    assert is_async_callable(judge)  # TRL gathers async rewards concurrently
    assert judge.required_columns() == ["answer"]
    assert asyncio.run(judge(completions=["4", "5"], answer=["4", "4"])) == [1.0, 0.0]
    with pytest.raises(RewardPluginError, match="'flaky' raised ConnectionError on sample 1"):
        asyncio.run(registry.wrap_reward("flaky", flaky)(completions=["ok", "boom"]))


def test_plugin_object_names_what_a_reward_refers_to_without_building_it():
    from trl_lab.rewards.registry import plugin_object
    from trl_lab.rewards.learned_rm import LearnedRewardModel

    assert plugin_object("learned_rm") is LearnedRewardModel  # a class, not an instance (nothing loaded)
    assert plugin_object("trl_lab.rewards.learned_rm:LearnedRewardModel") is LearnedRewardModel
    with pytest.raises(RewardPluginError, match="unknown reward 'lerned_rm'.*Did you mean 'learned_rm'"):
        plugin_object("lerned_rm")


# --- coin_flip: the random-reward control -------------------------------------------------------------


def test_coin_flip_ignores_the_answer_and_is_seeded(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    reward = get_reward("coin_flip", seed=3)
    right, wrong = ["#### 4"] * 400, ["no idea"] * 400
    flips = reward(completions=right) + reward(completions=wrong)
    assert set(flips) == {0.0, 1.0}
    assert abs(sum(flips) / len(flips) - 0.5) < 0.06  # 800 fair flips: 0.5 +- 3.5 standard errors
    again = get_reward("coin_flip", seed=3)
    assert again(completions=wrong) + again(completions=right) == flips  # the order of calls, not the text
    assert get_reward("coin_flip", seed=4)(completions=right) != flips[:400]
    monkeypatch.setenv("RANK", "1")
    assert get_reward("coin_flip", seed=3)(completions=right) != flips[:400]  # each rank its own stream
    assert get_reward("coin_flip", seed=0, p=0.0)(completions=right) == [0.0] * 400


@pytest.mark.parametrize("kwargs", [{"seed": "1"}, {"seed": True}, {"p": 1.5}, {"p": -0.1}])
def test_coin_flip_rejects_bad_options(kwargs):
    with pytest.raises(RewardPluginError, match="reward plugin 'coin_flip' failed to build.*coin_flip: `(seed|p)`"):
        get_reward("coin_flip", **kwargs)
