"""trl_lab.reward_models.training: a thin RewardTrainer on a tiny model; the saved RM loads with learned_rm."""

from __future__ import annotations

import random

import pytest
import torch
from datasets import Dataset

from trl_lab.reward_models.training import RewardConfig, RewardTrainer, check_pooling

WORDS = ["Janet", "has", "16", "eggs", "She", "eats", "3", "sells", "the", "rest", "for", "2", "each", "step"]


def marker_pairs(n: int, seed: int) -> list[dict]:
    """Trivially separable pairs: ``chosen`` ends with the marker "#### 26", ``rejected`` with "answer 42"."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 8)))
        prompt = [{"role": "user", "content": f"Question {rng.randint(0, 99)}?"}]
        pairs.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": f"{body} #### 26"}],
                      "rejected": [{"role": "assistant", "content": f"{body} answer 42"}],
                      "weight": 0.5})
    return pairs


def tiny_args(tmp_path, **overrides) -> RewardConfig:
    base = dict(output_dir=str(tmp_path / "rm"), max_steps=12, per_device_train_batch_size=16, learning_rate=1e-2,
                lr_scheduler_type="constant", logging_steps=4, save_strategy="no", report_to="none", use_cpu=True,
                bf16=False, seed=0, max_length=128, disable_tqdm=True, activation_checkpointing=False,
                max_grad_norm=1.0)
    return RewardConfig(**{**base, **overrides})


@pytest.fixture
def base_model(tiny_model_dir) -> str:
    return str(tiny_model_dir)


def pair_accuracy(reward, pairs) -> float:
    prompts = [p["prompt"] for p in pairs]
    chosen = reward(prompts=prompts, completions=[p["chosen"] for p in pairs])
    rejected = reward(prompts=prompts, completions=[p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def test_trains_to_high_accuracy_and_loads_with_learned_rm(base_model, tmp_path):
    from trl_lab.rewards.learned_rm import LearnedRewardModel

    args = tiny_args(tmp_path)
    trainer = RewardTrainer(base_model, args=args, train_dataset=Dataset.from_list(marker_pairs(192, seed=0)))
    assert trainer.pooling_gap is not None and trainer.pooling_gap < 1e-4
    trainer.train()
    accuracies = [log["accuracy"] for log in trainer.state.log_history if "accuracy" in log]
    assert accuracies[-1] > 0.9, accuracies
    trainer.save_model(args.output_dir)

    reward = LearnedRewardModel(args.output_dir, device="cpu")
    held_out = marker_pairs(64, seed=1)
    assert pair_accuracy(reward, held_out) > 0.9
    # learned_rm scores exactly as the trained model does (same rendering, same pooling)
    model = trainer.model.eval()
    ids = trainer.processing_class.apply_chat_template(held_out[0]["prompt"] + held_out[0]["chosen"],
                                                       tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        direct = model(input_ids=torch.tensor([ids])).logits[0, 0].item()
    assert reward(prompts=[held_out[0]["prompt"]], completions=[held_out[0]["chosen"]])[0] == pytest.approx(direct,
                                                                                                          abs=1e-4)


def test_margin_column_is_renamed_and_used(base_model, tmp_path):
    args = tiny_args(tmp_path, max_steps=1, margin_column="weight")
    trainer = RewardTrainer(base_model, args=args, train_dataset=Dataset.from_list(marker_pairs(8, seed=0)))
    assert "margin" in trainer.train_dataset.column_names and "weight" not in trainer.train_dataset.column_names
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert batch["margin"].tolist() == [0.5] * 4
    # TRL's loss subtracts the margin: -logsigmoid(r_c - r_r - m)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    rc, rr = logits.chunk(2)
    expected = -torch.nn.functional.logsigmoid(rc - rr - 0.5).mean()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_missing_margin_column_is_named(base_model, tmp_path):
    args = tiny_args(tmp_path, max_steps=1, margin_column="gap")
    with pytest.raises(ValueError, match="'gap' is not a column of train_dataset"):
        RewardTrainer(base_model, args=args, train_dataset=Dataset.from_list(marker_pairs(4, seed=0)))


def test_causal_lm_lora_is_refused(base_model, tmp_path):
    from peft import LoraConfig

    with pytest.raises(ValueError, match="SEQ_CLS"):
        RewardTrainer(base_model, args=tiny_args(tmp_path, max_steps=1),
                      train_dataset=Dataset.from_list(marker_pairs(4, seed=0)),
                      peft_config=LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))


def test_lora_adapter_trains_and_loads(base_model, tmp_path):
    from peft import LoraConfig

    from trl_lab.rewards.learned_rm import LearnedRewardModel

    args = tiny_args(tmp_path, max_steps=2)
    trainer = RewardTrainer(base_model, args=args, train_dataset=Dataset.from_list(marker_pairs(32, seed=0)),
                            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                   task_type="SEQ_CLS"))
    trainer.train()
    trainer.save_model(args.output_dir)
    reward = LearnedRewardModel(args.output_dir, device="cpu")
    assert len(reward(prompts=None, completions=["#### 26"])) == 1


def test_check_pooling_catches_a_pad_token_inside_the_text(base_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model)
    model = AutoModelForSequenceClassification.from_pretrained(base_model, num_labels=1)
    a = tok("Janet has 16 eggs")["input_ids"]
    b = tok("She eats 3 and sells the rest for 2 each")["input_ids"]
    assert len(a) != len(b)
    model.config.pad_token_id = tok.pad_token_id
    assert check_pooling(model, tok.pad_token_id, [a, b]) < 1e-4
    # the model's config names another pad token than the one the batch is padded with: it pools on padding
    model.config.pad_token_id = tok.eos_token_id
    with pytest.raises(ValueError, match="pooling is wrong"):
        check_pooling(model, tok.pad_token_id, [a, b])
