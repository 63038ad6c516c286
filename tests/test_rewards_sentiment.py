"""sentiment: the VADER, hf and learned backends, the pair generator, bad input and construction errors."""

from __future__ import annotations

import math

import pytest
import torch

from trl_lab import RewardPluginError, get_reward
from trl_lab.data.sentiment_pairs import CONTENTS, sentiment_pairs
from trl_lab.testing import save_tiny_classifier

CHEER, GLOOM = "Great job, you are amazing!", "This is terrible and wrong."


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("sst"), num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})


@pytest.fixture(scope="module")
def trained_rm(tmp_path_factory):
    """The example script's sentiment RM: tiny random base, a few RewardTrainer steps."""
    from trl_lab.scripts import train_sentiment_rm as script

    out = tmp_path_factory.mktemp("sentiment_rm")
    result = script.main(["--output_dir", str(out), "--max_steps", "12", "--train_pairs", "192",
                          "--eval_pairs", "64", "--logging_steps", "12"])
    return result, script


# ------------------------------------------------------------------ vader
def test_vader_ranks_cheer_above_gloom():
    reward = get_reward("sentiment")  # backend vader is the offline default
    cheer, gloom = reward(prompts=["p", "p"], completions=[CHEER, GLOOM])
    assert cheer > 0.5 and gloom < -0.3


def test_vader_bad_input():
    reward = get_reward("sentiment", backend="vader", max_chars=100)
    out = reward(prompts=None, completions=["", None, "   ", "good " * 100000,
                                            [{"role": "assistant", "content": CHEER}]])
    assert out[:3] == [0.0, 0.0, 0.0] and out[3] > 0.5 and out[4] > 0.5
    with pytest.raises(RewardPluginError, match=r"'sentiment' raised TypeError on sample 0: .*int"):
        reward(prompts=None, completions=[3])


# ------------------------------------------------------------------ hf
def test_hf_prob_and_margin(classifier_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(classifier_dir).eval()
    tok = AutoTokenizer.from_pretrained(classifier_dir)
    with torch.no_grad():
        logits = [model(**tok(t, return_tensors="pt")).logits[0] for t in (CHEER, GLOOM)]
    prob = get_reward("sentiment", backend="hf", path=str(classifier_dir), device="cpu")
    margin = get_reward("sentiment", backend="hf", path=str(classifier_dir), device="cpu", output="margin")
    assert prob(completions=[CHEER, GLOOM]) == pytest.approx([l.softmax(-1)[1].item() for l in logits], abs=1e-5)
    assert margin(completions=[CHEER, GLOOM]) == pytest.approx([(l[1] - l[0]).item() for l in logits], abs=1e-5)


def test_hf_label_names_are_configurable_and_case_insensitive(tmp_path):
    path = save_tiny_classifier(tmp_path, num_labels=3, id2label={0: "neg", 1: "neutral", 2: "pos"})
    reward = get_reward("sentiment", backend="hf", path=str(path), device="cpu", positive_label="POS")
    out = reward(completions=[CHEER, GLOOM, ""])
    assert all(0.0 < x < 1.0 for x in out)


def test_hf_long_and_empty_completions(classifier_dir):
    reward = get_reward("sentiment", backend="hf", path=str(classifier_dir), device="cpu", max_length=32)
    out = reward(completions=["", "wow " * 50000, None])
    assert len(out) == 3 and all(math.isfinite(x) for x in out) and out[0] == out[2]


def test_hf_without_positive_label_lists_the_labels(tmp_path):
    path = save_tiny_classifier(tmp_path, num_labels=2)  # LABEL_0, LABEL_1
    with pytest.raises(RewardPluginError, match=r"sentiment: no label 'POSITIVE' among the model's labels "
                                                r"\['LABEL_0', 'LABEL_1'\]; set `positive_label`"):
        get_reward("sentiment", backend="hf", path=str(path), device="cpu")
    ok = get_reward("sentiment", backend="hf", path=str(path), device="cpu", positive_label="LABEL_1")
    assert len(ok(completions=[CHEER])) == 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"backend": "textblob"}, r"sentiment: `backend` must be one of"),
        ({"backend": "vader", "path": "x"}, r"backend 'vader' takes only `max_chars`"),
        ({"backend": "hf"}, r"backend 'hf' needs `path`"),
        ({"backend": "hf", "path": "/no/such/model"}, r"sentiment: `path` '/no/such/model' does not exist"),
        ({"backend": "hf", "path": "CLS", "output": "logit"}, r"`output` must be 'prob' or 'margin'"),
        ({"backend": "hf", "path": "CLS", "temperature": 2}, r"backend 'hf' has no option\(s\) \['temperature'\]"),
        ({"backend": "learned"}, r"backend 'learned' needs `path`"),
        ({"backend": "learned", "path": "CLS"}, r"sentiment: `path` .* has 2 outputs"),
        ({"max_chars": 0}, r"`max_chars` must be a positive integer"),
    ],
)
def test_construction_errors(classifier_dir, kwargs, fragment):
    kwargs = {k: (str(classifier_dir) if v == "CLS" else v) for k, v in kwargs.items()}
    with pytest.raises(RewardPluginError, match=fragment):
        get_reward("sentiment", **kwargs)


# ------------------------------------------------------------------ pairs and the learned backend
def test_pairs_are_deterministic_and_splits_disjoint():
    assert sentiment_pairs(20, seed=3) == sentiment_pairs(20, seed=3)
    assert sentiment_pairs(20, seed=3) != sentiment_pairs(20, seed=4)

    def contents(pairs):
        return {c for p in pairs for c in CONTENTS if c in p["chosen"].lower() and c in p["rejected"].lower()}

    train, test = contents(sentiment_pairs(400)), contents(sentiment_pairs(400, split="test"))
    assert train and test and not train & test
    assert all(p["chosen"] != p["rejected"] for p in sentiment_pairs(50))
    with pytest.raises(ValueError, match="split must be one of"):
        sentiment_pairs(1, split="dev")


def test_learned_sentiment_rm_beats_chance_on_held_out_pairs(trained_rm):
    result, script = trained_rm
    assert result["steps"] == 12
    assert result["accuracy"] >= 0.8  # held-out content sentences, measured through learned_rm
    reward = get_reward("sentiment", backend="learned", path=result["output_dir"], device="cpu")
    assert script.pair_accuracy(reward, sentiment_pairs(64, split="test", seed=1)) >= 0.8
    cheer, gloom = reward(prompts=["Q?", "Q?"], completions=[CHEER, GLOOM])
    assert cheer > gloom


def test_sentiment_rm_job_writes_its_summary_and_can_adapt_the_last_layers_only(tmp_path, tiny_model_dir):
    import json

    from trl_lab.scripts import train_sentiment_rm as script

    out = tmp_path / "rm"
    result = script.main(["--output_dir", str(out), "--model_name_or_path", str(tiny_model_dir), "--max_steps", "2",
                          "--train_pairs", "32", "--eval_pairs", "8", "--use_peft", "true",
                          "--lora_task_type", "SEQ_CLS", "--lora_r", "4", "--lora_alpha", "8",
                          "--lora_target_modules", "q_proj", "v_proj", "--lora_last_n_layers", "1"])
    assert json.loads((out / script.SUMMARY_FILE).read_text()) == result
    assert result["steps"] == 2 and result["eval_pairs"] == 8 and math.isfinite(result["padding_margin"])
    adapter = json.loads((out / "adapter_config.json").read_text())
    from transformers import AutoConfig

    layers = AutoConfig.from_pretrained(tiny_model_dir).num_hidden_layers
    assert adapter["layers_to_transform"] == [layers - 1]  # LoRA on the last layer only
    with pytest.raises(ValueError, match="lora_last_n_layers is set but use_peft is not"):
        script.main(["--output_dir", str(tmp_path / "x"), "--model_name_or_path", str(tiny_model_dir),
                     "--lora_last_n_layers", "1"])


def test_padding_margin_is_what_length_alone_earns():
    from trl_lab.scripts.train_sentiment_rm import padding_margin

    def by_length(prompts, completions):
        return [len(c) / 100 for c in completions]

    def by_cheer(prompts, completions):
        return [c.count("!") for c in completions]

    assert padding_margin(by_length, repeats=3) > 0.5
    assert padding_margin(by_cheer) == 0.0


def test_learned_backend_ignores_the_prompt_and_takes_learned_rm_options(trained_rm):
    path = trained_rm[0]["output_dir"]
    reward = get_reward("sentiment", backend="learned", path=path, device="cpu", normalize="fixed", mean=1.0, std=2.0)
    plain = get_reward("learned_rm", path=path, device="cpu", with_prompt=False)
    a = reward(prompts=["one prompt", [{"role": "user", "content": "another"}]], completions=[CHEER, [
        {"role": "assistant", "content": GLOOM}]])
    b = plain(prompts=None, completions=[CHEER, GLOOM])
    assert a == pytest.approx([(x - 1.0) / 2.0 for x in b], abs=1e-5)
    edge = reward(prompts=None, completions=["", "yay " * 20000])  # empty and truncated: still scored
    assert len(edge) == 2 and all(math.isfinite(x) for x in edge)
