"""PPO with a learned critic: the advantage arithmetic by hand, the critic and the policy learning, checkpoints."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from tests.helpers import launch_two_cpu_processes, tiny_config, write_tiny_run_config
from trl_lab import GRPOConfig, GRPOTrainer, PPOConfig, PPOTrainer, completion_text
from trl_lab.ppo.advantages import (
    clipped_value_loss,
    compute_gae,
    explained_variance,
    masked_whiten,
    shaped_rewards,
)
from trl_lab.ppo.critic import VALUE_HEAD_FILE

REPO = Path(__file__).resolve().parents[1]


# --- the arithmetic, by hand ----------------------------------------------------------------------

def close(actual: torch.Tensor, expected: list, atol: float = 1e-6) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # row 1 ends (EOS) at t=1; t=2 is padding


def test_shaped_rewards_put_score_on_last_real_token_and_kl_everywhere():
    kl = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.0, 9.0]])  # 9.0 sits on padding and must be ignored
    rewards = shaped_rewards(torch.tensor([1.0, 2.0]), MASK, kl, beta=0.1)
    close(rewards, [[-0.01, 0.02, 0.97], [-0.05, 2.0, 0.0]])
    # A row with no real token (masked truncated completion) gets nothing.
    empty = shaped_rewards(torch.tensor([5.0]), torch.zeros(1, 3), None)
    assert empty.tolist() == [[0.0, 0.0, 0.0]]


def test_gae_and_returns_hand_computed_with_padding_after_eos():
    rewards = torch.tensor([[-0.01, 0.02, 0.97], [-0.05, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, -0.1], [1.0, 0.4, 7.0]])  # 7.0 on padding: must not leak into t=1
    advantages, returns = compute_gae(rewards, values, MASK, gamma=0.9, lam=0.5)
    # row 0: d2 = 0.97 + 0.1 = 1.07; d1 = 0.02 + 0.9*(-0.1) - 0.2 = -0.27; A1 = -0.27 + 0.45*1.07 = 0.2115
    #        d0 = -0.01 + 0.9*0.2 - 0.5 = -0.33; A0 = -0.33 + 0.45*0.2115 = -0.234825
    # row 1: d1 = 2.0 + 0.9*0 - 0.4 = 1.6 (V after EOS is 0); d0 = -0.05 + 0.36 - 1.0 = -0.69; A0 = -0.69 + 0.72
    close(advantages, [[-0.234825, 0.2115, 1.07], [0.03, 1.6, 0.0]])
    close(returns, [[0.265175, 0.4115, 0.97], [1.03, 2.0, 0.0]])


def test_gae_with_gamma_lam_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.2, 0.5, 0.9]])
    advantages, returns = compute_gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    close(returns, [[1.0, 1.0, 1.0]])
    close(advantages, [[0.8, 0.5, 0.1]])


def test_masked_whitening_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 100.0]])
    white = masked_whiten(x, MASK)
    # real values 1..5: mean 3, population std sqrt(2)
    expected = [(v - 3.0) / math.sqrt(2.0) for v in (1, 2, 3, 4, 5)]
    assert white[MASK.bool()].tolist() == pytest.approx(expected, abs=1e-6)
    assert white[1, 2].item() == 0.0


def test_clipped_value_loss_and_clip_fraction():
    old = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    new = torch.tensor([[0.5, 0.1, -0.5], [0.0, 0.0, 3.0]])
    ret = torch.tensor([[1.0, 1.0, -1.0], [0.0, 1.0, 0.0]])
    loss, clipfrac = clipped_value_loss(new, old, ret, MASK, cliprange=0.2)
    # per token max(unclipped, clipped): (0.8^2=0.64 > 0.25), 0.81 (0.1 not clipped), (0.8^2 > 0.25), 0, 1
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81 + 0.64 + 0.0 + 1.0) / 5)
    assert clipfrac.item() == pytest.approx(2 / 5)


def test_explained_variance():
    targets = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]])
    assert explained_variance(targets, targets, MASK).item() == pytest.approx(1.0)
    assert explained_variance(torch.zeros_like(targets) + 3.0, targets, MASK).item() == pytest.approx(0.0)
    assert math.isnan(explained_variance(targets, torch.ones_like(targets), MASK).item())


# --- config -----------------------------------------------------------------------------------------


def ppo_args(tmp_path, **overrides) -> PPOConfig:
    return tiny_config(PPOConfig, tmp_path, **overrides)


def test_config_allows_one_generation_and_keeps_trl_checks(tmp_path):
    args = ppo_args(tmp_path)
    assert args.num_generations == 1 and type(args.num_generations) is int
    assert args.beta == 0.05 and args.generation_batch_size == 4
    with pytest.raises(ValueError, match="divisible by num_generations"):
        ppo_args(tmp_path, num_generations=3)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("gamma", 1.5, "gamma must be in"),
        ("lam", -0.1, "lam must be in"),
        ("vf_coef", -1.0, "vf_coef must be >= 0"),
        ("cliprange_value", 0.0, "cliprange_value must be > 0"),
        ("beta", -0.1, "beta"),
        ("loss_type", "cispo", "loss_type='cispo'"),
        ("multi_objective_aggregation", "normalize_then_sum", "multi_objective_aggregation"),
        ("num_generations", 0, "num_generations must be >= 1"),
    ],
)
def test_config_bad_values_name_the_key(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message):
        ppo_args(tmp_path, **{key: value})


def test_trainer_refuses_a_grpo_config(tmp_path, tiny_model_dir):
    args = GRPOConfig(output_dir=str(tmp_path), num_generations=2, per_device_train_batch_size=2, use_cpu=True,
                      report_to="none", rewards=["gsm8k"])
    with pytest.raises(TypeError, match="needs a trl_lab.PPOConfig"):
        PPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=say_rows())


# --- toy task: reward digits ------------------------------------------------------------------------


def digits(completions, **kwargs):
    """Fraction of the completion's characters that are digits."""
    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def say_rows(n: int = 64) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"Say {i}"}]} for i in range(n)])


TOY = dict(per_device_train_batch_size=8, max_completion_length=6, learning_rate=3e-2, temperature=1.0, beta=0.0)


def test_rollout_outputs_per_token_advantages_and_returns(tmp_path, tiny_model_dir):
    args = ppo_args(tmp_path, rewards=None, **{**TOY, "beta": 0.1})
    trainer = PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args, train_dataset=say_rows())
    with torch.no_grad():
        trainer.critic.head.bias.fill_(0.25)  # non-zero values, so GAE mixes them in
    batch = [say_rows(8)[i] for i in range(8)]
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch)
    mask = out["completion_mask"].float()
    assert out["advantages"].shape == mask.shape == out["returns"].shape == out["old_values"].shape
    assert torch.all(out["advantages"][mask == 0] == 0) and torch.all(out["returns"][mask == 0] == 0)
    assert torch.allclose(out["old_values"][mask.bool()], torch.tensor(0.25))
    # whitened over the real tokens
    real = out["advantages"][mask.bool()]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-5) and real.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    # Full-model policy at step 0 equals its reference copy: the KL penalty is 0, so with gamma=1 the return at
    # the last real token is exactly the sequence reward.
    assert trainer.ref_model is not None
    last = mask.sum(1).long() - 1
    texts = trainer.processing_class.batch_decode(out["completion_ids"], skip_special_tokens=True)
    scores = torch.tensor(digits(texts))
    assert out["returns"][torch.arange(8), last].tolist() == pytest.approx(scores.tolist(), abs=1e-5)


def test_critic_learns_on_a_fixed_batch(tmp_path, tiny_model_dir):
    """One generation batch reused for 25 PPO epochs: value loss falls, explained variance rises."""
    steps = 25
    args = ppo_args(tmp_path, rewards=None, max_steps=steps, num_iterations=steps, cliprange_value=10.0,
                    vf_coef=1.0, **{**TOY, "learning_rate": 1e-2})
    trainer = PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args, train_dataset=say_rows())
    trainer.train()
    logs = [e for e in trainer.state.log_history if "ppo/value_loss" in e]
    assert len(logs) == steps and sum("reward" in e for e in logs) == 1  # generated once
    loss = [e["ppo/value_loss"] for e in logs]
    ev = [e["ppo/explained_variance"] for e in logs]
    assert loss[0] > 0 and ev[0] == pytest.approx(0.0, abs=1e-6)  # zero-initialised head predicts 0
    assert statistics.mean(loss[-3:]) < 0.3 * loss[0], loss
    assert statistics.mean(ev[-3:]) > 0.6, ev


def _reward_curve(trainer) -> list[float]:
    trainer.train()
    return [e["reward"] for e in trainer.state.log_history if "reward" in e]


LEARN_STEPS = 24


def test_ppo_learns_toy_task(tmp_path, tiny_model_dir):
    args = ppo_args(tmp_path, rewards=None, max_steps=LEARN_STEPS, num_generations=1, **TOY)
    rewards = _reward_curve(PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args,
                                       train_dataset=say_rows()))
    assert len(rewards) == LEARN_STEPS
    assert statistics.mean(rewards[-5:]) > statistics.mean(rewards[:5]) + 0.3, rewards


def test_grpo_learns_toy_task_same_settings(tmp_path, tiny_model_dir):
    """The GRPO counterpart of test_ppo_learns_toy_task: same model, data, reward, lr, batch and steps."""
    args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=LEARN_STEPS, num_generations=4, logging_steps=1,
                      report_to="none", save_strategy="no", use_cpu=True, bf16=False, activation_checkpointing=False,
                      seed=0, **TOY)
    rewards = _reward_curve(GRPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args,
                                        train_dataset=say_rows()))
    assert len(rewards) == LEARN_STEPS
    assert statistics.mean(rewards[-5:]) > statistics.mean(rewards[:5]) + 0.1, rewards


# --- checkpoints, LoRA, the example, two processes ----------------------------------------------------


def test_checkpoint_saves_value_head_beside_a_clean_policy_and_resume_loads_it(tmp_path, tiny_model_dir):
    args = ppo_args(tmp_path, rewards=None, save_strategy="steps", save_steps=2, **TOY)
    trainer = PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args, train_dataset=say_rows())
    trainer.train()
    head_params = {id(p) for p in trainer.critic.head.parameters()}
    assert head_params <= {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    ckpt = tmp_path / "out" / "checkpoint-2"
    saved = load_file(ckpt / VALUE_HEAD_FILE)
    assert torch.equal(saved["weight"], trainer.critic.head.weight.detach())
    assert saved["weight"].abs().sum() > 0  # it trained
    assert not [k for k in load_file(ckpt / "model.safetensors") if "value_head" in k]

    fresh = PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args, train_dataset=say_rows())
    assert fresh.critic.head.weight.abs().sum() == 0
    fresh._load_from_checkpoint(str(ckpt))
    assert torch.equal(fresh.critic.head.weight.detach(), saved["weight"])


def test_lora_reference_is_the_base_with_adapters_disabled(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    args = ppo_args(tmp_path, rewards=None, **{**TOY, "beta": 0.5, "learning_rate": 5e-2}, max_steps=3)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = PPOTrainer(model=str(tiny_model_dir), reward_funcs=[digits], args=args, train_dataset=say_rows(),
                         peft_config=lora)
    assert trainer.ref_model is None  # no second copy of the weights
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "trl_lab_value_head" in n for n in trainable)
    assert any("trl_lab_value_head" in n for n in trainable)
    trainer.train()
    kls = [e["kl"] for e in trainer.state.log_history if "kl" in e]
    assert kls[0] == pytest.approx(0.0, abs=1e-6)  # zero-initialised LoRA: policy == reference
    assert kls[-1] > 1e-4  # the adapters moved the policy away from the base
    trainer.save_model(str(tmp_path / "final"))
    assert (tmp_path / "final" / "adapter_model.safetensors").exists()
    assert (tmp_path / "final" / VALUE_HEAD_FILE).exists()


def _write_tiny_ppo_config(tmp_path, model_dir, data_dir) -> Path:
    return write_tiny_run_config(tmp_path, model_dir, data_dir, num_generations=1, num_iterations=2)


def test_ppo_job_with_lora_on_local_gsm8k(tmp_path, tiny_model_dir, shared_gsm8k):
    from trl_lab.scripts import ppo_gsm8k

    config = _write_tiny_ppo_config(tmp_path, tiny_model_dir, shared_gsm8k)
    trainer = ppo_gsm8k.main(["--config", str(config), "--use_cpu", "true", "--gamma", "0.99"])
    assert isinstance(trainer, PPOTrainer) and trainer.args.gamma == 0.99 and trainer.args.num_generations == 1
    assert type(trainer.model).__name__.startswith("Peft")
    assert (tmp_path / "run" / "adapter_config.json").exists() and (tmp_path / "run" / VALUE_HEAD_FILE).exists()
    entry = next(e for e in trainer.state.log_history if "reward" in e)
    for key in ("rewards/gsm8k/mean", "kl", "ppo/value_loss", "ppo/returns_mean", "ppo/values_mean",
                "ppo/advantages_mean", "ppo/value_clipfrac", "loss"):
        assert key in entry and math.isfinite(entry[key]), (key, sorted(entry))


def test_default_cpu_config_parses():
    from trl_lab.scripts.grpo_gsm8k import parse_args

    config = REPO / "examples" / "configs" / "ppo_gsm8k_cpu.yaml"
    script_args, args, model_args = parse_args(PPOConfig, config, ["--use_cpu", "true"])
    assert isinstance(args, PPOConfig) and args.num_generations == 1 and args.beta == 0.04
    assert model_args.model_name_or_path == "smollm2-135m-instruct" and model_args.use_peft
    assert [r["name"] for r in args.rewards] == ["gsm8k", "gsm8k_format"]


def test_accelerate_launch_two_cpu_processes(tmp_path, tiny_model_dir, shared_gsm8k):
    """`accelerate launch --num_processes 2` on CPU: both ranks run PPO (value head synced by DDP), rank 0 saves."""
    config = _write_tiny_ppo_config(tmp_path, tiny_model_dir, shared_gsm8k)
    out = launch_two_cpu_processes(
        REPO / "examples" / "ppo_gsm8k.py", "--config", str(config), "--max_steps", "2", cwd=tmp_path
    )
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()
    assert (tmp_path / "run" / VALUE_HEAD_FILE).exists()
    assert "after 2 steps on 2 process(es)" in out.stdout
