"""Does ``torch.compile`` speed up CPU decoding? SmolLM2-135M in bf16, eager vs static KV cache vs static + compile.

transformers compiles the decoding forward only on accelerators unless ``CompileConfig._compile_all_devices`` is
set; this sets it (inductor, ``mode="default"``: no CUDA graphs on CPU). Each variant decodes the first ``batch``
GSM8K test questions for exactly ``new_tokens`` greedy tokens after one warm-up call (the compile happens there);
variants alternate (A B C, then C B A) and the median of the two repeats is printed, with the share of sequences
identical to the eager ones.

    python bench/compile_decode.py [--batches 16 64] [--new-tokens 128]

Time nothing while another CPU job runs. Measured 2026-12-06 (docs/results/cpu_step_speed/compile_decode_amx.txt):
compile bought 1.16x at batch 16 and lost at batch 64 (0.80x), after 52 s of compiling; not adopted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"
VARIANTS = ("eager", "static", "compiled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig

    from trl_lab.embedded_model import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    questions = [json.loads(line)["question"] for line in GSM8K_TEST.open()][: max(args.batches)]
    texts = [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
             for q in questions]
    tok.padding_side = "left"

    def run(variant: str, batch: int) -> tuple[float, torch.Tensor]:
        enc = tok(texts[:batch], return_tensors="pt", padding=True, add_special_tokens=False)
        kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if variant in ("static", "compiled"):
            kwargs["cache_implementation"] = "static"
        if variant == "compiled":
            config = CompileConfig(fullgraph=False, dynamic=False, mode="default")
            config._compile_all_devices = True  # transformers otherwise compiles on accelerators only
            kwargs["compile_config"] = config
        else:
            kwargs["disable_compile"] = True
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        return batch * args.new_tokens / (time.perf_counter() - start), out[:, enc["input_ids"].shape[1]:]

    for batch in args.batches:
        for variant in VARIANTS:
            start = time.perf_counter()
            run(variant, batch)
            print(f"warm {variant} b{batch}: {time.perf_counter() - start:.1f}s", flush=True)
        speeds: dict[str, list[float]] = {v: [] for v in VARIANTS}
        outputs: dict[str, torch.Tensor] = {}
        for repeat in range(2):
            for variant in VARIANTS if repeat == 0 else VARIANTS[::-1]:
                tps, outputs[variant] = run(variant, batch)
                speeds[variant].append(tps)
                print(f"b{batch} {variant}: {tps:.1f} tok/s", flush=True)
        for variant in VARIANTS:
            same = sum(bool((outputs[variant][i] == outputs["eager"][i]).all()) for i in range(batch)) / batch
            print(f"== b{batch} {variant}: median {statistics.median(speeds[variant]):.1f} tok/s, identical to eager "
                  f"{same:.0%}")


if __name__ == "__main__":
    main()
