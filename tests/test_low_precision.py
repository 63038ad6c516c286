"""The faster step that is not exact, and says so: rollouts from a bf16 copy of the policy (refreshed with the merged
adapter before each generation, the policy untouched), and ``cpu_bf16`` (bf16 autocast for the training passes) only
on CPUs with native bf16. The tolerance stated in the docs is tested here on a tiny model."""

from __future__ import annotations

import logging

import pytest
import torch
from peft import LoraConfig

import trl_lab.grpo as grpo
from tests.helpers import tiny_config
from tests.test_fast_paths import base_weights, lora_model
from tests.test_grpo_e2e import gsm_rows
from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.low_precision_sampler import LowPrecisionSampler, parse_generation_dtype


def bf16_sampler_trainer(tmp_path, model_dir, *, max_steps: int) -> GRPOTrainer:
    """A tiny LoRA GRPO trainer whose rollouts come from a bf16 copy (``generation_dtype: bfloat16``)."""
    args = tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k_format"], num_generations=2, max_steps=max_steps,
                       generation_dtype="bfloat16")
    return GRPOTrainer(model=str(model_dir), args=args, train_dataset=gsm_rows(),
                       peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))


def test_the_sampler_holds_the_merged_weights_in_bf16_and_leaves_the_policy_bit_for_bit():
    policy, tok = lora_model()
    policy.eval()
    before = base_weights(policy)
    sampler = LowPrecisionSampler(policy, torch.bfloat16)
    with sampler.generating(policy) as copy:
        assert all(p.dtype == torch.bfloat16 for p in copy.parameters())
        assert not any("lora" in n for n, _ in copy.named_parameters())
        layer = policy.base_model.model.model.layers[0].self_attn.q_proj
        merged = layer.base_layer.weight + layer.get_delta_weight("default")
        assert torch.equal(copy.model.layers[0].self_attn.q_proj.weight, merged.to(torch.bfloat16))
        assert torch.equal(copy.model.embed_tokens.weight, policy.base_model.model.model.embed_tokens.weight.bfloat16())
        ids = torch.tensor([tok("What is 2 + 2?")["input_ids"]])
        out = copy.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert out.shape == (1, ids.shape[1] + 8)
    after = base_weights(policy)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert not any(getattr(m, "merged", False) for m in policy.modules())
    # the greedy tokens of the bf16 copy mostly agree with the fp32 policy's (not always: it is not exact)
    fp32 = policy.generate(input_ids=ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert (fp32[0, ids.shape[1]:] == out[0, ids.shape[1]:]).float().mean() >= 0.5


def test_a_refresh_follows_the_adapter_as_it_trains():
    policy, _ = lora_model()
    policy.eval()
    sampler = LowPrecisionSampler(policy, torch.bfloat16)
    sampler.refresh(policy)
    first = sampler.model.model.layers[1].mlp.up_proj.weight.clone()
    with torch.no_grad():
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.add_(1.0)
    sampler.refresh(policy)
    assert not torch.equal(first, sampler.model.model.layers[1].mlp.up_proj.weight)


def test_where_the_sampler_does_not_apply_it_says_why():
    policy, _ = lora_model(dropout=0.1)
    policy.train()
    assert "dropout" in LowPrecisionSampler.applies_to(policy, torch.bfloat16)
    assert LowPrecisionSampler.applies_to(policy, None) == "generation_dtype is unset"
    policy.eval()
    assert LowPrecisionSampler.applies_to(policy, torch.bfloat16) is None
    assert "already" in LowPrecisionSampler.applies_to(policy.to(torch.bfloat16), torch.bfloat16)
    assert parse_generation_dtype("bf16") is torch.bfloat16 and parse_generation_dtype(None) is None
    with pytest.raises(ValueError, match="generation_dtype must be one of"):
        parse_generation_dtype("bfloat8")


def test_grpo_generates_from_the_bf16_copy_and_trains_the_fp32_policy(tmp_path, tiny_model_dir, monkeypatch):
    trainer = bf16_sampler_trainer(tmp_path, tiny_model_dir, max_steps=2)
    dtypes = []
    real = LowPrecisionSampler.generating

    def spy(self, policy):
        dtypes.append(next(policy.parameters()).dtype)
        return real(self, policy)

    monkeypatch.setattr(LowPrecisionSampler, "generating", spy)
    policy = trainer.accelerator.unwrap_model(trainer.model)
    before = base_weights(policy)
    trainer.train()
    assert dtypes == [torch.float32, torch.float32]  # one refresh per generation, from the fp32 policy
    assert trainer.sampler is not None and next(trainer.sampler.model.parameters()).dtype == torch.bfloat16
    assert trainer.model_wrapped is not trainer.sampler.model  # put back after each generation
    assert all(torch.equal(before[n], base_weights(policy)[n]) for n in before)  # LoRA trains, the base does not
    assert all(p.dtype == torch.float32 for p in policy.parameters())


def test_no_rollout_copy_where_rollouts_do_not_come_from_this_processs_generate(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    trainer = bf16_sampler_trainer(tmp_path, tiny_model_dir, max_steps=1)
    monkeypatch.setattr(trainer, "_generates_in_process", lambda: False)  # as under vLLM, DeepSpeed or FSDP
    assert trainer.rollout_sampler() is None and trainer.sampler is None  # the held-out callback gets none either


def test_cpu_bf16_sets_bf16_and_the_sampler_only_on_a_cpu_with_native_bf16(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(grpo, "cpu_has_native_bf16", lambda: True)
    args = tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k_format"], num_generations=2, cpu_bf16=True)
    assert args.bf16 and args.generation_dtype == "bfloat16"
    monkeypatch.setattr(grpo, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING):
        args = tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k_format"], num_generations=2, cpu_bf16=True)
    assert not args.bf16 and args.generation_dtype is None
    assert "no native bf16" in caplog.text
    # As the CPU demo config has it: no use_cpu (transformers refuses bf16 without an accelerator unless it is set)
    monkeypatch.setattr(grpo, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    args = GRPOConfig(output_dir=str(tmp_path / "o"), rewards=["gsm8k_format"], num_generations=2,
                      per_device_train_batch_size=2, cpu_bf16=True, report_to="none")
    assert args.bf16 and args.use_cpu and args.device.type == "cpu"
    with pytest.raises(ValueError, match="generation_dtype must be one of"):
        tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k_format"], num_generations=2, generation_dtype="half-ish")


def test_bf16_autocast_log_probs_stay_within_the_stated_tolerance(tmp_path, tiny_model_dir):
    """The training passes under ``bf16`` (autocast) against fp32, on the same tokens: per-token log-probs within
    0.05 nats at most and 0.01 on average, and the policy gradient pointing the same way (cosine > 0.99). The docs
    state the same bound for SmolLM2-135M, measured by ``bench/step.py``."""
    from trl.trainer.utils import add_fused_lm_head
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model)
    ids = torch.randint(3, model.config.vocab_size, (4, 48), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :20] = -100

    def pass_(autocast: bool):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return out.log_probs.detach()[:, 20:], grad

    fp32, g32 = pass_(False)
    bf16, g16 = pass_(True)
    diff = (fp32 - bf16).abs()
    assert diff.max() < 0.05 and diff.mean() < 0.01
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_held_out_answers_decode_with_the_rollout_copy_from_the_first_evaluation(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    from trl_lab.callbacks.heldout import HeldOutAccuracyCallback

    trainer = bf16_sampler_trainer(tmp_path, tiny_model_dir, max_steps=1)
    callback = HeldOutAccuracyCallback(gsm_rows().select(range(2)), max_new_tokens=4, metrics_log=False,
                                       show_progress=False, kl_to_ref=True).bind(trainer)
    decoders = []
    import trl_lab.callbacks.heldout as heldout

    real = heldout.generate_greedy

    def spy(model, *a, **k):
        decoders.append(next(model.parameters()).dtype)
        return real(model, *a, **k)

    monkeypatch.setattr(heldout, "generate_greedy", spy)
    metrics = callback.evaluate(step=0)  # before any rollout: the copy is built here
    assert decoders == [torch.bfloat16] and trainer.sampler is not None
    assert metrics["heldout/kl_to_ref"] == pytest.approx(0.0, abs=1e-6)  # the KL monitor reads the fp32 policy
