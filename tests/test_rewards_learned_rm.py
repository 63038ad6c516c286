"""learned_rm: loading (dir, adapter), rendering as RewardTrainer trained, truncation, batching, normalisation,
clipping, ensembles and construction errors, on tiny random Llama classifiers."""

from __future__ import annotations

import math
import statistics
import warnings
from pathlib import Path

import pytest
import torch

from trl_lab import RewardPluginError, get_reward
from trl_lab.rewards.learned_rm import LearnedRewardModel
from trl_lab.testing import build_tiny_tokenizer, save_tiny_classifier

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["Q: what is 2+2? A: ", "Say something nice. ", "Q: 6*7? A: ", "Hi "]
COMPLETIONS = ["4", "You are doing great work, keep going!", "The answer is 42.", ""]
CHAT = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6*7?"}]]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("rm"), num_labels=1, seed=1)


@pytest.fixture(scope="module")
def rm_dir_b(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("rm_b"), num_labels=1, seed=2)


@pytest.fixture(scope="module")
def rm(rm_dir):
    return LearnedRewardModel(str(rm_dir), device="cpu", max_length=64)


def direct_score(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def test_registered_and_scores_one_float_per_completion(rm_dir):
    reward = get_reward("learned_rm", path=str(rm_dir), device="cpu")
    out = reward(prompts=PROMPTS, completions=COMPLETIONS)
    assert len(out) == 4 and all(isinstance(x, float) for x in out)
    assert len(set(out)) == 4  # different inputs, different scores


def test_plain_text_rendered_like_reward_trainer(rm):
    tok = rm.models[0].tokenizer
    ids = rm.models[0].inputs.encode(["Q: 2+2? A: "], ["4"])[0]
    assert ids == tok("Q: 2+2? A: 4" + tok.eos_token)["input_ids"]  # prompt + completion + EOS, special tokens on


def test_chat_prompt_rendered_with_rm_chat_template(rm):
    tok = rm.models[0].tokenizer
    ids = rm.models[0].inputs.encode(CHAT, [[{"role": "assistant", "content": "42"}]])[0]
    text = tok.apply_chat_template(CHAT[0] + [{"role": "assistant", "content": "42"}], tokenize=False)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).endswith("<|im_start|>assistant\n42<|im_end|>\n")
    # a plain-string completion after a chat prompt renders the same
    assert rm.models[0].inputs.encode(CHAT, ["42"])[0] == ids


def test_batched_right_padded_scores_equal_single_unpadded_scores(rm_dir):
    batched = LearnedRewardModel(str(rm_dir), device="cpu", batch_size=8)
    single = LearnedRewardModel(str(rm_dir), device="cpu", batch_size=1)
    assert batched.models[0].tokenizer.padding_side == "right"
    a = batched(prompts=PROMPTS, completions=COMPLETIONS)
    b = single(prompts=PROMPTS, completions=COMPLETIONS)
    assert a == pytest.approx(b, abs=1e-5)
    model = batched.models[0].classifier.model
    for score, ids in zip(a, batched.models[0].inputs.encode(PROMPTS, COMPLETIONS)):
        assert score == pytest.approx(direct_score(model, ids), abs=1e-5)  # last non-pad token pooling


def test_long_prompt_is_cut_from_the_left_keeping_the_completion(rm):
    tok, inputs = rm.models[0].tokenizer, rm.models[0].inputs
    ids = inputs.encode(["word " * 300], ["The answer is 42."])[0]
    assert len(ids) == 64
    assert tok.decode(ids).endswith("word The answer is 42.<|im_end|>")
    chat_ids = inputs.encode([[{"role": "user", "content": "word " * 300}]], ["The answer is 42."])[0]
    assert len(chat_ids) == 64
    assert tok.decode(chat_ids).endswith("word <|im_end|>\n<|im_start|>assistant\nThe answer is 42.<|im_end|>\n")


def test_very_long_completion_is_truncated_not_crashing(rm):
    out = rm(prompts=["Q: "] * 2, completions=["blah " * 20000, [{"role": "assistant", "content": "x" * 50000}]])
    assert len(out) == 2
    ids = rm.models[0].inputs.encode(["Q: "], ["blah " * 20000])[0]
    assert len(ids) == 64 and ids[-1] == rm.models[0].tokenizer.eos_token_id  # the pooled EOS is kept


def test_empty_none_and_bad_completions(rm_dir):
    reward = get_reward("learned_rm", path=str(rm_dir), device="cpu")
    assert reward(prompts=None, completions=[]) == []
    out = reward(prompts=["Q: ", "Q: "], completions=["", None])
    assert out[0] == pytest.approx(out[1])  # None is the empty completion
    with pytest.raises(RewardPluginError, match=r"'learned_rm' raised TypeError on sample 1.*int"):
        reward(prompts=["Q: ", "Q: "], completions=["ok", 7])


def test_fixed_normalisation_and_clipping(rm_dir, rm):
    raw = rm(prompts=PROMPTS, completions=COMPLETIONS)
    norm = LearnedRewardModel(str(rm_dir), device="cpu", normalize="fixed", mean=0.01, std=0.02, clip=0.5)
    expected = [min(max((r - 0.01) / 0.02, -0.5), 0.5) for r in raw]
    assert norm(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(expected, abs=1e-4)


def test_calibration_set_fixes_mean_and_std(rm_dir, rm):
    calib = ["good", "bad", "The answer is 4.", "", "Thanks!"]
    raw_calib = rm(prompts=None, completions=calib)
    mean, std = statistics.fmean(raw_calib), statistics.pstdev(raw_calib)
    norm = LearnedRewardModel(str(rm_dir), device="cpu", normalize="fixed", calibration_texts=calib)
    assert norm(prompts=None, completions=calib) == pytest.approx([(r - mean) / std for r in raw_calib], abs=1e-4)
    raw = rm(prompts=PROMPTS, completions=COMPLETIONS)  # later batches use the same, frozen statistics
    assert norm(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx([(r - mean) / std for r in raw], abs=1e-4)


def test_fixed_without_statistics_uses_the_first_batch_then_freezes(rm_dir, rm):
    norm = LearnedRewardModel(str(rm_dir), device="cpu", normalize="fixed")
    first = norm(prompts=PROMPTS, completions=COMPLETIONS)
    assert statistics.fmean(first) == pytest.approx(0.0, abs=1e-6)
    assert statistics.pstdev(first) == pytest.approx(1.0, abs=1e-4)
    assert norm(prompts=PROMPTS, completions=COMPLETIONS) == pytest.approx(first, abs=1e-6)


def test_running_normalisation_uses_everything_seen(rm_dir, rm):
    norm = LearnedRewardModel(str(rm_dir), device="cpu", normalize="running", clip=[-10, 10])
    raw_a = rm(prompts=PROMPTS[:2], completions=COMPLETIONS[:2])
    raw_b = rm(prompts=PROMPTS[2:], completions=COMPLETIONS[2:])
    norm(prompts=PROMPTS[:2], completions=COMPLETIONS[:2])
    out_b = norm(prompts=PROMPTS[2:], completions=COMPLETIONS[2:])
    seen = raw_a + raw_b
    mean, std = statistics.fmean(seen), statistics.pstdev(seen)
    assert out_b == pytest.approx([(r - mean) / std for r in raw_b], abs=1e-4)


@pytest.mark.parametrize("mode", ["mean", "min", "mean_minus_std"])
def test_ensemble_combination(rm_dir, rm_dir_b, mode):
    ens = LearnedRewardModel(paths=[str(rm_dir), str(rm_dir_b)], ensemble=mode, ensemble_k=2.0, device="cpu")
    a, b = ens.raw_scores(PROMPTS, COMPLETIONS)
    assert a != pytest.approx(b)
    logged = {}
    out = ens(prompts=PROMPTS, completions=COMPLETIONS, log_metric=lambda k, v: logged.setdefault(k, v))
    expected = {
        "mean": [(x + y) / 2 for x, y in zip(a, b)],
        "min": [min(x, y) for x, y in zip(a, b)],
        "mean_minus_std": [(x + y) / 2 - 2.0 * abs(x - y) / 2 for x, y in zip(a, b)],
    }[mode]
    assert out == pytest.approx(expected, abs=1e-6)
    assert logged["learned_rm/ensemble_std"] == pytest.approx(statistics.fmean(abs(x - y) / 2 for x, y in zip(a, b)))


def test_lora_adapter_scores_equal_merged_model(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    peft_model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                 target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload()
    merged.config.pad_token_id = 0
    merged.save_pretrained(tmp_path / "merged")
    build_tiny_tokenizer().save_pretrained(tmp_path / "merged")

    from_adapter = LearnedRewardModel(str(tmp_path / "adapter"), device="cpu")
    from_merged = LearnedRewardModel(str(tmp_path / "merged"), device="cpu")
    a = from_adapter(prompts=PROMPTS, completions=COMPLETIONS)
    b = from_merged(prompts=PROMPTS, completions=COMPLETIONS)
    assert a == pytest.approx(b, abs=1e-4)
    assert max(a) - min(a) > 1e-3  # the adapter changed the random model's scores


def test_adapter_without_trained_head_is_refused(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM", r=4, target_modules=["q_proj"])).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="learned_rm: adapter .* does not hold the classification head"):
        LearnedRewardModel(str(tmp_path), device="cpu")


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"path": "/no/such/rm"}, r"learned_rm: `path` '/no/such/rm' does not exist"),
        ({"paths": ["./missing_rm"]}, r"learned_rm: `paths` './missing_rm' does not exist"),
        ({}, "exactly one of `path`"),
        ({"path": "x", "paths": ["y"]}, "exactly one of `path`"),
        ({"path": "RM", "ensemble": "median"}, r"`ensemble` must be one of"),
        ({"path": "RM", "normalize": "zscore"}, r"learned_rm: normalize must be one of"),
        ({"path": "RM", "clip": [1, -1]}, r"learned_rm: `clip`: need low < high"),
        ({"path": "RM", "calibration_texts": ["a"]}, "needs normalize: fixed"),
        ({"path": "RM", "dtype": "float8"}, r"learned_rm: `dtype` must be one of"),
        ({"path": "RM", "batch_size": 0}, r"`batch_size` must be a positive integer"),
        ({"path": "RM", "max_length": 1}, r"`max_length` must be an integer >= 2"),
    ],
)
def test_construction_errors_name_plugin_and_key(rm_dir, kwargs, fragment):
    kwargs = {k: (str(rm_dir) if v == "RM" else v) for k, v in kwargs.items()}
    with pytest.raises(RewardPluginError, match=fragment):
        get_reward("learned_rm", device="cpu", **kwargs)


def test_classifier_with_two_outputs_is_refused(tmp_path):
    path = save_tiny_classifier(tmp_path, num_labels=2)
    with pytest.raises(RewardPluginError, match=r"learned_rm: `path` .* has 2 outputs \(num_labels=2"):
        get_reward("learned_rm", path=str(path), device="cpu")


def test_language_model_without_reward_head_is_refused(tiny_model_dir):
    with pytest.raises(RewardPluginError, match=r"learned_rm: `path` .* (has 2 outputs|randomly initialised)"):
        get_reward("learned_rm", path=str(tiny_model_dir), device="cpu")


def test_warns_when_policy_tokenizer_differs(rm_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LearnedRewardModel(str(rm_dir), device="cpu", policy_tokenizer=str(rm_dir))  # same: no warning
    other = build_tiny_tokenizer()
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    other.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"learned_rm: the reward model .* different tokenizer .*chat template"):
        LearnedRewardModel(str(rm_dir), device="cpu", policy_tokenizer=str(tmp_path))


def test_dtype_option(rm_dir):
    rm16 = LearnedRewardModel(str(rm_dir), device="cpu", dtype="bfloat16")
    assert rm16.models[0].classifier.model.dtype == torch.bfloat16
    assert len(rm16(prompts=PROMPTS, completions=COMPLETIONS)) == 4


def test_helpful_concise_example_config_combines_0_7_rm_and_0_3_length(rm_dir):
    import yaml

    from trl_lab import build_rewards

    config = yaml.safe_load((REPO / "examples" / "configs" / "rm_helpful_concise.yaml").read_text())
    specs = config["rewards"]
    assert specs[0]["kwargs"]["path"] == "outputs/helpful_rm"  # the documented placeholder
    specs[0]["kwargs"]["path"] = str(rm_dir)
    funcs, weights = build_rewards(specs)
    assert [f.__name__ for f in funcs] == ["learned_rm", "length"] and weights == [0.7, 0.3]
    prompts = CHAT * 3
    completions = [[{"role": "assistant", "content": t}] for t in ("42", "It is 42.", "Six sevens: 42. " * 4)]
    ids = [[1] * n for n in (2, 5, 40)]
    per_func = [f(prompts=prompts, completions=completions, completion_ids=ids) for f in funcs]
    assert per_func[1] == pytest.approx([1 - 2 / 128, 1 - 5 / 128, 1 - 40 / 128])
    assert all(math.isfinite(x) and -3.0 <= x <= 3.0 for x in per_func[0])  # running-normalised, clipped


def test_load_in_4bit_checks_bitsandbytes_first(rm_dir, monkeypatch):
    import trl_lab.reward_models.loading as sc
    from trl_lab.quantization import QuantizationUnavailableError

    def unavailable(device):
        raise QuantizationUnavailableError(f"no 4-bit kernels on {device}")

    monkeypatch.setattr(sc, "check_bitsandbytes", unavailable)
    with pytest.raises(RewardPluginError, match="'learned_rm' failed to build.*no 4-bit kernels on cpu"):
        get_reward("learned_rm", path=str(rm_dir), device="cpu", load_in_4bit=True)


def test_load_in_4bit_scores_like_full_precision(tmp_path):
    from trl_lab.quantization import QuantizationUnavailableError, check_bitsandbytes

    try:
        check_bitsandbytes("cpu")
    except QuantizationUnavailableError as exc:
        pytest.skip(str(exc))
    path = save_tiny_classifier(tmp_path, num_labels=1, hidden_size=64)
    full = LearnedRewardModel(str(path), device="cpu")
    q4 = LearnedRewardModel(str(path), device="cpu", load_in_4bit=True, dtype="float32")
    assert type(q4.models[0].classifier.model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    a, b = full(prompts=PROMPTS, completions=COMPLETIONS), q4(prompts=PROMPTS, completions=COMPLETIONS)
    assert b == pytest.approx(a, abs=0.15)


def test_chat_prompts_need_an_rm_chat_template(tmp_path):
    path = save_tiny_classifier(tmp_path, num_labels=1)
    config = (path / "tokenizer_config.json").read_text()
    import json

    data = json.loads(config)
    data.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(data))
    for extra in path.glob("chat_template.*"):
        extra.unlink()
    reward = get_reward("learned_rm", path=str(path), device="cpu")
    assert len(reward(prompts=["plain "], completions=["fine"])) == 1
    with pytest.raises(RewardPluginError, match="learned_rm: the prompts are conversational but .* no chat template"):
        reward(prompts=CHAT, completions=["42"])


def test_grpo_step_with_learned_rm_length_and_sentiment(tmp_path, tiny_model_dir, rm_dir):
    """The three plugins inside TRL's GRPOTrainer: conversational prompts, TRL's completion_ids, weights."""
    from datasets import Dataset

    from tests.helpers import tiny_config
    from trl_lab import GRPOConfig, GRPOTrainer

    rewards = [
        {"name": "learned_rm", "weight": 0.7, "kwargs": {"path": str(rm_dir), "device": "cpu"}},
        {"name": "length", "weight": 0.3, "kwargs": {"mode": "brevity", "max_length": 8}},
        {"name": "sentiment", "weight": 0.5},
    ]
    # The random RM has no audit: this test is about scoring inside TRL, the gate is tested in test_rm_gate.py.
    args = tiny_config(GRPOConfig, tmp_path, rewards=rewards, num_generations=2, max_steps=1, beta=0.0,
                       rm_audit_override=True)
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4)]
    with pytest.warns(UserWarning, match="learned_rm"):
        trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_list(rows))
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "reward" in e)
    parts = {n: entry[f"rewards/{n}/mean"] for n in ("learned_rm", "length", "sentiment")}
    assert all(math.isfinite(v) for v in parts.values())
    assert 0.0 <= parts["length"] < 1.0  # completions of 1..8 tokens (TRL's completion_ids)
    expected = 0.7 * parts["learned_rm"] + 0.3 * parts["length"] + 0.5 * parts["sentiment"]
    assert entry["reward"] == pytest.approx(expected, abs=1e-5)
