"""KL to the reference at any beta: exact numbers on a tiny model, the reference chosen like TRL's, and the
``heldout/kl_to_ref`` the held-out callback logs -- including at ``beta = 0``, where TRL logs no KL."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from trl_lab import GRPOConfig, GRPOTrainer, completion_text
from trl_lab.callbacks.heldout import HeldOutAccuracyCallback
from trl_lab.callbacks.kl_monitor import Reference, frozen_copy, reference_for, token_kl
from tests.helpers import tiny_config
from tests.test_heldout import questions, trainer  # noqa: F401  (fixture)


@pytest.fixture
def model(tiny_model_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def perturbed(model, scale=0.5, seed=1):
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return other


def brute_force_kl(policy, ref, prompt, completion):
    """Sum of KL(p || q) over completion positions, one unpadded sequence, written out term by term."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        p = torch.softmax(policy(ids).logits[0].double(), -1)
        q = torch.softmax(ref(ids).logits[0].double(), -1)
    total = 0.0
    for t in range(len(prompt) - 1, len(prompt) + len(completion) - 1):
        total += float((p[t] * (p[t].log() - q[t].log())).sum())
    return total


PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
COMPLETIONS = [[20, 21, 22, 23], [30], [40, 41]]


def test_kl_to_itself_is_zero_and_counts_completion_tokens(model):
    out = token_kl(model, frozen_copy(model), PROMPTS, COMPLETIONS, pad_token_id=0)
    assert [n for _, n in out] == [4, 1, 2]
    assert [s for s, _ in out] == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_kl_equals_the_definition_whatever_the_padding(model, batch_size):
    ref = perturbed(model)
    out = token_kl(model, Reference("ref_model", model=ref), PROMPTS, COMPLETIONS, pad_token_id=0,
                   batch_size=batch_size)
    expected = [brute_force_kl(model, ref, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert min(expected) > 1e-3  # a real divergence, not a trivially zero check
    assert [s for s, _ in out] == pytest.approx(expected, rel=1e-4)


def test_empty_completion_and_bad_inputs(model):
    assert token_kl(model, frozen_copy(model), [[1, 2]], [[]], pad_token_id=0) == [(0.0, 0)]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        token_kl(model, frozen_copy(model), [[1], [2]], [[3]], pad_token_id=0)
    with pytest.raises(ValueError, match="empty prompt"):
        token_kl(model, frozen_copy(model), [[]], [[3]], pad_token_id=0)


def test_peft_reference_is_the_base_model_with_adapters_off(model):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(model)
    policy = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    reference = reference_for(policy)
    assert reference.kind == "peft" and reference.adapter is None
    # A fresh LoRA adapter (B = 0) is the base model: no divergence.
    assert [s for s, _ in token_kl(policy, reference, PROMPTS, COMPLETIONS, pad_token_id=0)] == pytest.approx(
        [0.0, 0.0, 0.0], abs=1e-6)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(torch.randn_like(p))
    got = [s for s, _ in token_kl(policy, reference, PROMPTS, COMPLETIONS, pad_token_id=0)]
    expected = [brute_force_kl(policy, base, p, c) for p, c in zip(PROMPTS, COMPLETIONS)]
    assert min(expected) > 1e-4
    assert got == pytest.approx(expected, rel=1e-4)
    # The adapters are back on afterwards: the same call gives the same (non-zero) number.
    assert token_kl(policy, reference, PROMPTS[:1], COMPLETIONS[:1], pad_token_id=0)[0][0] == pytest.approx(got[0], rel=1e-4)


def test_reference_prefers_the_trainers_ref_model(model):
    ref = perturbed(model)
    assert reference_for(model, ref_model=ref).model is ref
    assert reference_for(model) is None  # plain model, no ref: the caller decides (the callback keeps a copy)


def args_for(tmp_path, beta, **overrides):
    defaults = dict(max_steps=3, num_generations=2, beta=beta, learning_rate=5e-2)
    return tiny_config(GRPOConfig, tmp_path, **{**defaults, **overrides})


def text_length(completions, **kwargs):
    """A reward that differs between completions of a random model (the GSM8K checker gives all zeros: no update)."""
    return [float(len(completion_text(c))) for c in completions]


def rl_trainer(tmp_path, tiny_model_dir, beta, **kwargs):
    return GRPOTrainer(model=str(tiny_model_dir), reward_funcs=text_length, args=args_for(tmp_path, beta),
                       train_dataset=questions(8), **kwargs)


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_callback_logs_kl_to_ref_at_beta_zero(tmp_path, tiny_model_dir, peft):
    """beta = 0: TRL logs no ``kl``; the callback's KL starts at 0 (policy == reference) and grows as it trains."""
    kwargs = {}
    if peft:
        from peft import LoraConfig

        kwargs["peft_config"] = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = rl_trainer(tmp_path, tiny_model_dir, 0.0, **kwargs)
    assert trainer.ref_model is None
    cb = HeldOutAccuracyCallback(questions(4), eval_steps=3, max_new_tokens=8, batch_size=4).bind(trainer)
    trainer.train()
    history = trainer.state.log_history
    assert not any("kl" in e for e in history)  # TRL's KL is off at beta = 0 ...
    held = [e for e in history if "heldout/kl_to_ref" in e]
    assert [e["step"] for e in held] == [0, 3]  # ... ours is not
    assert held[0]["heldout/kl_to_ref"] == pytest.approx(0.0, abs=1e-6)
    assert held[1]["heldout/kl_to_ref"] > 1e-4
    assert cb._reference.kind == ("peft" if peft else "copy")
    assert [h["kl_to_ref"] for h in cb.history] == [e["heldout/kl_to_ref"] for e in held]


def test_callback_uses_trls_reference_model_when_beta_is_positive(tmp_path, tiny_model_dir):
    trainer = rl_trainer(tmp_path, tiny_model_dir, 0.04)
    assert trainer.ref_model is not None
    cb = HeldOutAccuracyCallback(questions(4), eval_steps=3, max_new_tokens=8, batch_size=4).bind(trainer)
    trainer.train()
    assert cb._reference.kind == "ref_model"
    held = [e for e in trainer.state.log_history if "heldout/kl_to_ref" in e]
    assert held[0]["heldout/kl_to_ref"] == pytest.approx(0.0, abs=1e-6) and held[-1]["heldout/kl_to_ref"] > 1e-4
    assert any("kl" in e for e in trainer.state.log_history)


def test_kl_to_ref_can_be_turned_off(trainer):
    cb = HeldOutAccuracyCallback(questions(2), max_new_tokens=4, kl_to_ref=False).bind(trainer)
    metrics = cb.evaluate()
    assert "heldout/kl_to_ref" not in metrics and cb._reference is None


def test_frozen_copy_does_not_follow_a_patched_forward(model):
    """accelerate wraps ``forward`` on the instance; a deepcopy of the wrapper still calls the original model."""
    import functools
    import types

    original = model.forward

    @functools.wraps(original)
    def wrapped(self, *args, **kwargs):
        return original(*args, **kwargs)

    model.forward = types.MethodType(wrapped, model)
    reference = frozen_copy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5 * torch.randn_like(p))
    (kl, n), = token_kl(model, reference, PROMPTS[:1], COMPLETIONS[:1], pad_token_id=0)
    assert n == 4 and kl > 1e-3


def test_kl_items_measures_the_first_items_only_and_equals_their_kl(tmp_path, tiny_model_dir, monkeypatch):
    """``kl_items=k``: the KL of the first k answers, exactly what a callback on those k items alone measures."""
    trainer = rl_trainer(tmp_path, tiny_model_dir, 0.04)
    trainer.train()  # the policy has moved: KL > 0
    import trl_lab.callbacks.kl_monitor as kl_monitor

    measured = []
    real = kl_monitor.token_kl_entropy
    monkeypatch.setattr(kl_monitor, "token_kl_entropy", lambda m, r, prompts, *a, **k: measured.append(len(prompts))
                        or real(m, r, prompts, *a, **k))
    some = HeldOutAccuracyCallback(questions(6), max_new_tokens=8, batch_size=4, kl_items=2).bind(trainer)
    first_two = HeldOutAccuracyCallback(questions(6).select(range(2)), max_new_tokens=8, batch_size=4).bind(trainer)
    kl_some, kl_two = some.evaluate()["heldout/kl_to_ref"], first_two.evaluate()["heldout/kl_to_ref"]
    assert measured == [2, 2] and kl_some == pytest.approx(kl_two, rel=1e-5) and kl_some > 0
    with pytest.raises(ValueError, match="kl_items must be a positive integer"):
        HeldOutAccuracyCallback(questions(2), kl_items=0)


def test_kl_precision_bf16_runs_the_passes_under_autocast_within_tolerance(tmp_path, tiny_model_dir, monkeypatch):
    """``kl_precision="bf16"``: both teacher-forced passes under bf16 autocast (seen inside the model's linear
    layers), a KL close to the fp32 one; ``"train"`` follows ``args.bf16``; a bad value is refused by name."""
    trainer = rl_trainer(tmp_path, tiny_model_dir, 0.04)
    trainer.train()  # the policy has moved: KL > 0
    import trl_lab.callbacks.kl_monitor as kl_monitor

    seen = []
    real = kl_monitor.token_kl_entropy
    monkeypatch.setattr(kl_monitor, "token_kl_entropy", lambda *a, **k: seen.append(
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16) or real(*a, **k))
    kls = {}
    for precision in ("fp32", "bf16", "train"):
        cb = HeldOutAccuracyCallback(questions(6), max_new_tokens=8, batch_size=4, kl_precision=precision).bind(trainer)
        kls[precision] = cb.evaluate()["heldout/kl_to_ref"]
    assert seen == [False, True, bool(trainer.args.bf16)]
    assert kls["fp32"] > 1e-3
    # tiny random model, bf16 rounding of every layer: within 20% of the fp32 KL (SmolLM2-135M: ~1e-3 nats absolute)
    assert kls["bf16"] == pytest.approx(kls["fp32"], rel=0.2)
    assert kls["train"] == pytest.approx(kls["bf16" if trainer.args.bf16 else "fp32"], rel=1e-6)
    with pytest.raises(ValueError, match="kl_precision must be one of"):
        HeldOutAccuracyCallback(questions(2), kl_precision="fp16")


@pytest.mark.parametrize("bf16", [True, False])
def test_kl_precision_train_follows_the_trainers_bf16(model, bf16):
    from types import SimpleNamespace

    cb = HeldOutAccuracyCallback(questions(2), kl_precision="train")
    cb.trainer = SimpleNamespace(args=SimpleNamespace(bf16=bf16))
    with cb._kl_autocast(model):
        assert torch.is_autocast_enabled("cpu") is bf16
