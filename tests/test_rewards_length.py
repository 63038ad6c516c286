"""length: the four modes' numbers, the three ways of counting, bad input and construction errors."""

from __future__ import annotations

import pytest

from trl_lab import RewardPluginError, build_rewards, get_reward
from trl_lab.rewards.length import LengthReward


def call(reward, completions, ids=None):
    return reward(prompts=["p"] * len(completions), completions=completions, completion_ids=ids)


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"mode": "penalty", "target": 10}, [0.0, 0.0, -0.5, -9.0]),
        ({"mode": "penalty", "target": 10, "scale": 5}, [0.0, 0.0, -1.0, -18.0]),
        ({"mode": "brevity", "max_length": 20}, [1.0, 0.5, 0.25, 0.0]),
        ({"mode": "verbosity", "max_length": 20}, [0.0, 0.5, 0.75, 1.0]),
        ({"mode": "soft_overlong", "max_length": 20, "soft_cache": 10}, [0.0, 0.0, -0.5, -1.0]),
    ],
)
def test_modes_in_characters(kwargs, expected):
    reward = get_reward("length", unit="chars", **kwargs)
    assert call(reward, ["", "x" * 10, "y" * 15, "z" * 100]) == pytest.approx(expected)


def test_soft_overlong_matches_trl():
    from trl.rewards import get_soft_overlong_punishment

    ids = [[1] * n for n in (0, 79, 80, 81, 90, 100, 101, 500)]
    ours = call(get_reward("length", mode="soft_overlong", max_length=100, soft_cache=20), ["x"] * len(ids), ids)
    assert ours == get_soft_overlong_punishment(100, 20)(completion_ids=ids)


def test_tokens_from_trl_completion_ids():
    reward = get_reward("length", mode="penalty", target=3)
    # completion_ids are counted even when the completions are not strings (the text is not read)
    assert call(reward, [None, 12, "abc"], [[1, 2], [1, 2, 3, 4], [1] * 9]) == [0.0, pytest.approx(-1 / 3), -2.0]


def test_tokens_with_a_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["The answer is 42.", "", [{"role": "assistant", "content": "Janet has 16 eggs."}]]
    n = [len(tok("The answer is 42.", add_special_tokens=False)["input_ids"]), 0,
         len(tok("Janet has 16 eggs.", add_special_tokens=False)["input_ids"])]
    reward = get_reward("length", mode="verbosity", max_length=100, tokenizer=str(tiny_model_dir))
    assert call(reward, texts, [[0]] * 3) == pytest.approx([x / 100 for x in n])  # tokenizer wins over ids


def test_tokens_without_tokenizer_or_ids_is_a_clear_error():
    reward = get_reward("length", mode="penalty", target=3)
    with pytest.raises(RewardPluginError, match="'length' raised ValueError.*needs the `completion_ids`"):
        reward(prompts=["p"], completions=["abc"])


def test_bad_completions():
    reward = get_reward("length", mode="brevity", unit="chars", max_length=1000)
    assert call(reward, []) == []
    assert call(reward, ["", None, "x" * 10**6, [{"role": "assistant", "content": "hi"}]]) == [1.0, 1.0, 0.0, 0.998]
    with pytest.raises(RewardPluginError, match=r"'length' raised TypeError on sample 1: .*bytes"):
        call(reward, ["ok", b"bytes"])


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"mode": "longest"}, r"length: `mode` must be one of"),
        ({"mode": "penalty"}, r"length: mode 'penalty' needs \['target'\]"),
        ({"mode": "brevity", "target": 5, "max_length": 9}, r"does not use \['target'\]"),
        ({"mode": "penalty", "target": -3}, r"length: `target` must be a positive number"),
        ({"mode": "soft_overlong", "max_length": 10, "soft_cache": 10}, r"`soft_cache` \(10\) must be smaller"),
        ({"mode": "penalty", "target": 5, "unit": "words"}, r"length: `unit` must be one of"),
        ({"mode": "penalty", "target": 5, "unit": "chars", "tokenizer": "gpt2"}, "needs unit: tokens"),
        ({"mode": "penalty", "target": 5, "tokenizer": "/no/such/tokenizer"}, r"`tokenizer` '/no/such/tokenizer' does not exist"),
    ],
)
def test_construction_errors(kwargs, fragment):
    with pytest.raises(RewardPluginError, match=fragment):
        get_reward("length", **kwargs)


def test_weighted_with_correctness_through_specs():
    funcs, weights = build_rewards(["gsm8k", {"name": "length", "weight": 0.5,
                                              "kwargs": {"mode": "penalty", "target": 6, "unit": "chars"}}])
    assert [f.__name__ for f in funcs] == ["gsm8k", "length"] and weights == [1.0, 0.5]
    completions = ["#### 4", "It is 4, because two and two make four. #### 4"]
    per_func = [f(prompts=["p", "p"], completions=completions, answer=["4", "4"]) for f in funcs]
    total = [sum(w * r[i] for w, r in zip(weights, per_func)) for i in range(2)]
    assert total == pytest.approx([1.0, 1.0 + 0.5 * -(len(completions[1]) - 6) / 6])  # '#### 4' fits


def test_lengths_helper():
    assert LengthReward("penalty", unit="chars", target=1).lengths(["ab", ""]) == [2, 0]
