"""Held-out decoding with length-sorted batches vs batches in item order (``generate_completions(sort_by_length=)``).

The first ``--items`` GSM8K test questions after a seeded shuffle, greedy, exactly as the held-out evaluation
decodes them (chat template, left padding, batches of ``--batch-size``, ``--max-new-tokens``), on the embedded
SmolLM2-135M-Instruct in bf16 and in fp32. Variants alternate (A B B A); the faster of each pair is printed with
the share of items whose greedy tokens are identical in both orders.

    python bench/length_sorted_batches.py [--items 128] [--batch-size 64] [--max-new-tokens 128]

Time nothing while another CPU job runs. Measured 2026-12-07 (docs/results/cpu_step_speed/length_sorted_batches.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.callbacks.heldout import generate_completions, prompt_text
    from trl_lab.embedded_model import resolve_model_path

    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    questions = [json.loads(line)["question"] for line in GSM8K_TEST.open()]
    random.Random(args.seed).shuffle(questions)
    texts = [prompt_text([{"role": "user", "content": q}], tok) for q in questions[: args.items]]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    def padded(order: list[int]) -> int:
        return sum(max(lengths[i] for i in order[s : s + args.batch_size]) * len(order[s : s + args.batch_size])
                   for s in range(0, len(order), args.batch_size))

    by_length = sorted(range(len(texts)), key=lambda i: -lengths[i])
    print(f"{len(texts)} prompts, {sum(lengths)} tokens; padded to batches of {args.batch_size}: "
          f"{padded(list(range(len(texts))))} in item order, {padded(by_length)} sorted", flush=True)
    for dtype in (torch.bfloat16, torch.float32):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        seconds: dict[bool, list[float]] = {False: [], True: []}
        ids: dict[bool, list[list[int]]] = {}
        with torch.no_grad():
            for sort in (False, True, True, False):
                start = time.perf_counter()
                ids[sort], _ = generate_completions(model, tok, texts, max_new_tokens=args.max_new_tokens,
                                                    batch_size=args.batch_size, sort_by_length=sort)
                seconds[sort].append(time.perf_counter() - start)
                print(f"{str(dtype):15s} sorted={sort!s:5s} {seconds[sort][-1]:6.1f} s", flush=True)
        same = sum(a == b for a, b in zip(ids[False], ids[True], strict=True))
        order, sort = min(seconds[False]), min(seconds[True])
        print(f"== {str(dtype):15s} item order {order:6.1f} s | sorted {sort:6.1f} s | {order / sort:.2f}x | "
              f"identical greedy tokens {same}/{len(texts)}", flush=True)


if __name__ == "__main__":
    main()
