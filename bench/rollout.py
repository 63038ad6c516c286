"""Rollout decoding speed: each generation variant against TRL's own path, on the CPU demo's policy.

The policy is the embedded SmolLM2-135M-Instruct with a LoRA adapter (r 16 on every linear layer, its B matrices
drawn at random so that the adapter is not a no-op, as after training). Each variant decodes the same batch of
GSM8K-style chat prompts greedily for ``--new_tokens`` tokens; variants alternate within every repeat, and the
table gives median tokens/s, the ratio to TRL's path and the fraction of sequences identical to TRL's path.

* ``trl``: what TRL's GRPOTrainer runs on CPU: ``generate`` on the PEFT model, adapter unmerged, fp32, MKL;
* ``merged``: the adapter merged for generation (:mod:`trl_lab.merged_adapter`);
* ``merged+onednn``: and fp32 matmuls through oneDNN (:func:`trl_lab.cpu_tuning.route_fp32_matmul_to_onednn`);
* ``merged+onednn+static``: and transformers' static KV cache (``cache_implementation="static"``);
* ``trl+autocast``: what TRL's path runs with ``bf16: true`` on CPU (accelerate's bf16 autocast around the PEFT model);
* ``bf16-copy``: trl_lab's ``generation_dtype: bfloat16`` (:class:`trl_lab.low_precision_sampler.LowPrecisionSampler`:
  a bf16 copy refreshed with the merged adapter, the refresh timed with the decoding). Not exact: for the two bf16
  variants the table adds the mismatch to the fp32 policy on the variant's own tokens (teacher-forced): the mean
  and max |log p_policy - log p_variant| of those tokens and the mean per-token KL(variant || policy) over the whole
  vocabulary.

    python bench/rollout.py [--batch 8] [--new_tokens 128] [--repeats 3]

Time nothing while another CPU job runs: one busy neighbour slows a 2-thread run 3-6x.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("trl", "merged", "merged+onednn", "merged+onednn+static", "trl+autocast", "bf16-copy")


def build_policy(seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.embedded_model import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    model.eval()
    return model, tok


def prompts(tok, n: int) -> list[str]:
    from trl_lab.data.gsm8k import load_gsm8k

    data = load_gsm8k("gsm_symbolic", "test", limit=n)
    return [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in data["prompt"]]


def decode(model, tok, texts: list[str], variant: str, new_tokens: int, sampler=None):
    import torch

    from trl_lab.merged_adapter import merged_lora

    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    kwargs = {"cache_implementation": "static"} if variant.endswith("static") else {}
    backend = torch.backends.mkldnn.matmul
    previous = backend.fp32_precision
    try:
        if "onednn" in variant:
            from trl_lab.cpu_tuning import route_fp32_matmul_to_onednn

            route_fp32_matmul_to_onednn()
        merge = merged_lora(model) if variant.startswith("merged") else contextlib.nullcontext()
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("autocast"))
        with merge, autocast, torch.no_grad():
            start = time.perf_counter()
            with sampler.generating(model) if variant == "bf16-copy" else contextlib.nullcontext(model) as generator:
                out = generator.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                         pad_token_id=tok.pad_token_id, **kwargs)
            seconds = time.perf_counter() - start
    finally:
        backend.fp32_precision = previous
    completions = out[:, enc["input_ids"].shape[1]:]
    return completions.numel() / seconds, completions.tolist(), (out, enc["attention_mask"])


def mismatch(model, variant: str, sampler, out, prompt_mask) -> dict:
    """The variant's log-probs of its own tokens against the fp32 policy's (teacher-forced, both unmerged/clean)."""
    import torch

    mask = torch.cat([prompt_mask, torch.ones_like(out[:, prompt_mask.shape[1]:])], dim=1)
    n = out.shape[1] - prompt_mask.shape[1]
    with torch.no_grad():
        policy = model(input_ids=out, attention_mask=mask).logits[:, -n - 1:-1].float().log_softmax(-1)
        if variant == "bf16-copy":
            with sampler.generating(model) as copy:
                other = copy(input_ids=out, attention_mask=mask).logits[:, -n - 1:-1].float().log_softmax(-1)
        else:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                other = model(input_ids=out, attention_mask=mask).logits[:, -n - 1:-1].float().log_softmax(-1)
    tokens = out[:, -n:, None]
    diff = (policy.gather(-1, tokens) - other.gather(-1, tokens)).abs()
    kl = (other.exp() * (other - policy)).sum(-1)
    return {"mean_abs_logp_diff": float(diff.mean()), "max_abs_logp_diff": float(diff.max()), "kl": float(kl.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    import torch

    from trl_lab.low_precision_sampler import LowPrecisionSampler

    model, tok = build_policy()
    sampler = LowPrecisionSampler(model, torch.bfloat16) if "bf16-copy" in args.variants else None
    texts = prompts(tok, args.batch)
    decode(model, tok, texts[:2], "trl", 4)  # warm-up
    speeds: dict[str, list[float]] = {v: [] for v in args.variants}
    tokens: dict[str, list] = {}
    outputs: dict[str, tuple] = {}
    for _ in range(args.repeats):
        for variant in args.variants:
            tps, seqs, output = decode(model, tok, texts, variant, args.new_tokens, sampler)
            speeds[variant].append(tps)
            tokens.setdefault(variant, seqs)
            outputs.setdefault(variant, output)
    reference = tokens.get("trl")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, {args.new_tokens} new "
          f"tokens, {args.repeats} repeats (alternating), greedy")
    print(f"{'variant':24s} {'tokens/s':>9s} {'x trl':>7s} {'identical':>10s}   per repeat")
    rows = {}
    for variant in args.variants:
        med = statistics.median(speeds[variant])
        ratio = med / statistics.median(speeds["trl"]) if "trl" in speeds else float("nan")
        same = (sum(a == b for a, b in zip(tokens[variant], reference)) / len(reference)) if reference else float("nan")
        rows[variant] = {"tokens_per_s": med, "x_trl": ratio, "identical": same, "runs": speeds[variant]}
        print(f"{variant:24s} {med:9.1f} {ratio:7.2f} {same:10.0%}   " + " ".join(f"{s:.1f}" for s in speeds[variant]))
    for variant in (v for v in args.variants if "bf16" in v or "autocast" in v):
        rows[variant]["mismatch"] = m = mismatch(model, variant, sampler, *outputs[variant])
        print(f"{variant}: vs the fp32 policy on its own tokens: mean |d log p| {m['mean_abs_logp_diff']:.2e}, max "
              f"{m['max_abs_logp_diff']:.2e}, per-token KL {m['kl']:.2e}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
