"""Rollout decoding speed: each generation variant against TRL's own path, on the CPU demo's policy.

The policy is the embedded SmolLM2-135M-Instruct with a LoRA adapter (r 16 on every linear layer, its B matrices
drawn at random so that the adapter is not a no-op, as after training). Each variant decodes the same batch of
GSM8K-style chat prompts greedily for ``--new_tokens`` tokens; variants alternate within every repeat, and the
table gives median tokens/s, the ratio to TRL's path and the fraction of sequences identical to TRL's path.

* ``trl``: what TRL's GRPOTrainer runs on CPU: ``generate`` on the PEFT model, adapter unmerged, fp32, MKL;
* ``merged``: the adapter merged for generation (:mod:`trl_lab.merged_adapter`);
* ``merged+onednn``: and fp32 matmuls through oneDNN (:func:`trl_lab.cpu_tuning.route_fp32_matmul_to_onednn`);
* ``merged+onednn+static``: and transformers' static KV cache (``cache_implementation="static"``).

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

VARIANTS = ("trl", "merged", "merged+onednn", "merged+onednn+static")


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


def decode(model, tok, texts: list[str], variant: str, new_tokens: int):
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
        with merge, torch.no_grad():
            start = time.perf_counter()
            out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **kwargs)
            seconds = time.perf_counter() - start
    finally:
        backend.fp32_precision = previous
    completions = out[:, enc["input_ids"].shape[1]:]
    return completions.numel() / seconds, completions.tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new_tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    args = parser.parse_args()

    import torch

    model, tok = build_policy()
    texts = prompts(tok, args.batch)
    decode(model, tok, texts[:2], "trl", 4)  # warm-up
    speeds: dict[str, list[float]] = {v: [] for v in args.variants}
    tokens: dict[str, list] = {}
    for _ in range(args.repeats):
        for variant in args.variants:
            tps, seqs = decode(model, tok, texts, variant, args.new_tokens)
            speeds[variant].append(tps)
            tokens.setdefault(variant, seqs)
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
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
