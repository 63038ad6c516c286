"""The faster step that keeps TRL's numbers: the LoRA adapter merged for generation (restored bit for bit), and on
CPU oneDNN matmuls (only where fp32-accurate) and small tiles for TRL's fused LM head (the same log-probs)."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model

import trl_lab.cpu_tuning as cpu_tuning
from tests.helpers import tiny_config
from tests.test_grpo_e2e import gsm_rows
from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.merged_adapter import merge_blocker, merged_lora
from trl_lab.testing import build_tiny_causal_lm, build_tiny_tokenizer


def lora_model(dropout: float = 0.0, seed: int = 0):
    tok = build_tiny_tokenizer()
    model = build_tiny_causal_lm(tok, seed=seed)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear"))
    torch.manual_seed(seed)
    with torch.no_grad():  # a trained-looking adapter: lora_B is zero at init, which would make merging a no-op
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return peft, tok


def base_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}


def test_merged_generation_gives_the_same_tokens_and_restores_the_weights_bit_for_bit():
    model, tok = lora_model()
    model.eval()
    before = base_weights(model)
    ids = torch.tensor([tok("What is 2 + 2?")["input_ids"]])
    plain = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    with merged_lora(model) as reason:
        assert reason is None
        layer = next(m for m in model.modules() if hasattr(m, "merged") and hasattr(m, "lora_A"))
        assert layer.merged
        merged = model.generate(input_ids=ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(plain, merged)
    for _ in range(50):
        with merged_lora(model):
            pass
    after = base_weights(model)
    assert all(torch.equal(before[n], after[n]) for n in before)  # bit-identical, not just close
    assert not any(getattr(m, "merged", False) for m in model.modules())


def test_merge_is_skipped_where_it_would_not_be_exact():
    model, _ = lora_model(dropout=0.1)
    model.train()
    assert "dropout" in merge_blocker(model)
    with merged_lora(model) as reason:
        assert "dropout" in reason and not any(getattr(m, "merged", False) for m in model.modules())
    model.eval()
    assert merge_blocker(model) is None  # dropout is off in eval mode
    plain = build_tiny_causal_lm(build_tiny_tokenizer())
    assert merge_blocker(plain) == "no LoRA layers"
    model.merge_adapter()
    assert merge_blocker(model) == "adapters already merged"


def test_grpo_generates_rollouts_with_the_adapter_merged_and_trains_on_the_unmerged_model(tmp_path, tiny_model_dir,
                                                                                          monkeypatch):
    seen, current = [], {}

    def run(merge: bool):
        args = tiny_config(GRPOConfig, tmp_path / str(merge), rewards=["gsm8k_format"], num_generations=2,
                           max_steps=1, merge_adapter_for_generation=merge)
        trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows(),
                              peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        unwrapped = trainer.accelerator.unwrap_model(trainer.model)
        current["layers"] = [m for m in unwrapped.modules() if hasattr(m, "merged") and hasattr(m, "lora_A")]
        current["merge"] = merge
        if "generate" not in current:
            real_generate = current["generate"] = type(unwrapped).generate

            def generate(self, *a, **k):
                seen.append((current["merge"], all(layer.merged for layer in current["layers"])))
                return real_generate(self, *a, **k)

            monkeypatch.setattr(type(unwrapped), "generate", generate)
        before = base_weights(unwrapped)
        trainer.train()
        after = base_weights(unwrapped)
        assert all(torch.equal(before[n], after[n]) for n in before)  # only the adapter trained
        assert not any(layer.merged for layer in current["layers"])

    run(True)
    run(False)
    assert (True, True) in seen and (False, False) in seen and (True, False) not in seen


def test_onednn_route_is_kept_only_when_fp32_accurate(monkeypatch):
    backend = torch.backends.mkldnn.matmul
    previous = backend.fp32_precision
    try:
        kept, error = cpu_tuning.route_fp32_matmul_to_onednn()
        assert error is not None and kept == (error <= cpu_tuning.FP32_ACCURATE)
        backend.fp32_precision = previous
        monkeypatch.setattr(cpu_tuning, "_gemm_rel_error", lambda: 4e-3)  # what bf16 math (an AMX CPU) would give
        assert cpu_tuning.route_fp32_matmul_to_onednn() == (False, 4e-3)
        assert backend.fp32_precision == previous
    finally:
        backend.fp32_precision = previous


def test_small_lm_head_tiles_give_the_same_log_probs_and_gradients():
    """TRL's fused LM head on CPU, default tiles vs trl_lab's: the same numbers (float rounding)."""
    import trl.kernels.chunked_logprob as chunked_logprob
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    assert isinstance(chunked_logprob.TOKEN_CHUNK_SIZE, int) and isinstance(trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE, int)
    defaults = chunked_logprob.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    tok = build_tiny_tokenizer()
    model = build_tiny_causal_lm(tok)
    add_fused_lm_head(model)
    ids = torch.randint(0, len(tok), (3, 40), generator=torch.Generator().manual_seed(0))

    def log_probs_and_grad():
        model.zero_grad()
        out = model(input_ids=ids, labels=ids, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach().clone(), model.lm_head.weight.grad.clone()

    try:
        reference = log_probs_and_grad()
        cpu_tuning.set_lm_head_tiles(8, 16)  # many tiles even for a tiny vocabulary
        tiled = log_probs_and_grad()
    finally:
        chunked_logprob.TOKEN_CHUNK_SIZE, trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = defaults
    assert torch.allclose(reference[0], tiled[0], atol=1e-5)
    assert torch.allclose(reference[1], tiled[1], atol=1e-5)
    with pytest.raises(ValueError, match="tiles must be positive"):
        cpu_tuning.set_lm_head_tiles(0, 16)


def test_scoring_only_labelled_positions_on_cpu_gives_the_same_log_probs_and_gradients(monkeypatch):
    """TRL's fused LM head on CPU scores every position; trl_lab's setting only those with a label (prompt positions
    masked with -100, as TRL's GRPO passes them): the same log-probs everywhere and the same gradients."""
    import trl.kernels.chunked_logprob as chunked_logprob
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    # the pinned hook (an earlier trainer in this process may have tuned it already: start from TRL's own)
    original = getattr(trl_utils._use_triton, "_trl_lab_original", trl_utils._use_triton)
    assert original is chunked_logprob._use_triton
    monkeypatch.setattr(trl_utils, "_use_triton", original)  # undone after the test
    tok = build_tiny_tokenizer()
    model = build_tiny_causal_lm(tok)
    add_fused_lm_head(model)
    ids = torch.randint(0, len(tok), (3, 40), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :25] = -100  # the prompt
    labels[0, 35:] = -100  # padding after a short completion

    seen = []
    real_apply = trl_utils._ChunkedLogProbFunction.apply

    def spy(hidden, *args):
        seen.append(hidden.shape[0])
        return real_apply(hidden, *args)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", spy)

    def log_probs_and_grad():
        model.zero_grad()
        out = model(input_ids=ids, labels=labels, fused_lm_head=True)
        out.log_probs.sum().backward()
        return out.log_probs.detach().clone(), model.lm_head.weight.grad.clone(), model.model.layers[0].mlp.up_proj.weight.grad.clone()

    reference = log_probs_and_grad()
    cpu_tuning.score_only_labelled_positions()
    cpu_tuning.score_only_labelled_positions()  # idempotent: wraps once
    assert not getattr(trl_utils._use_triton._trl_lab_original, "_trl_lab_compact_cpu", False)
    compact = log_probs_and_grad()
    assert seen == [3 * 39, int((labels[:, 1:] != -100).sum())]  # every position, then only the labelled ones
    for a, b in zip(reference, compact):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    assert chunked_logprob._use_triton(torch.device("cpu")) is False  # the kernel itself stays torch on CPU


def test_cpu_description_reads_the_model_name_and_the_amx_flag(monkeypatch, tmp_path):
    import trl_lab.cpu_tuning as cpu_tuning

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n")
    real_path = cpu_tuning.Path
    monkeypatch.setattr(cpu_tuning, "Path", lambda p: real_path(info) if p == "/proc/cpuinfo" else real_path(p))
    assert cpu_tuning.cpu_description() == {"cpu_model": "Intel(R) Xeon(R) Processor", "cpu_amx_bf16": True}
    info.write_text("model name\t: AMD EPYC\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert cpu_tuning.cpu_description() == {"cpu_model": "AMD EPYC", "cpu_amx_bf16": False}
