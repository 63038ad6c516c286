"""Task quality of the lower-precision generation paths: the same checkpoint, the same held-out items, greedy.

Held-out accuracy of the embedded SmolLM2-135M-Instruct (its own weights, as at step 0 of a run) on a GSM8K-format
task, answered by the fp32 model, by bf16 autocast, and by trl_lab's bf16 copy
(:class:`trl_lab.low_precision_sampler.LowPrecisionSampler`), scored by the ``gsm8k`` checker. The items are
paired, so the table gives each variant's accuracy (95% Wilson interval), the discordant pairs against fp32 and the
exact two-sided McNemar p-value: "equal task quality" means the difference is inside the noise of this many items.
It is also the step-0 rung of a task ladder (issue 15): a task where the model scores between 20% and 60%.

    python bench/sampler_quality.py [--items 256] [--task chain_sum] \
        [--task_config '{"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}']

Not a timing: it may run beside other jobs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = ("fp32", "autocast", "bf16-copy")
DEMO_TASK = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--task", default="chain_sum")
    parser.add_argument("--task_config", type=json.loads, default=DEMO_TASK)
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.callbacks.heldout import generate_greedy, prompt_text
    from trl_lab.cpu_tuning import cpu_has_native_bf16, tune_cpu
    from trl_lab.data.gsm8k import heldout_gsm8k
    from trl_lab.embedded_model import resolve_model_path
    from trl_lab.low_precision_sampler import LowPrecisionSampler
    from trl_lab.report import mcnemar_exact, wilson_interval
    from trl_lab.rewards.gsm8k import check_answer

    tuning = tune_cpu()
    path = resolve_model_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    items = heldout_gsm8k(args.items, source="reasoning_gym", split="test", seed=args.seed, task=args.task,
                          task_config=args.task_config)
    texts = [prompt_text(p, tok) for p in items["prompt"]]
    correct: dict[str, list[bool]] = {}
    for variant in args.variants:
        generator, ctx = model, contextlib.nullcontext()
        if variant == "autocast":
            ctx = torch.autocast("cpu", dtype=torch.bfloat16)
        elif variant == "bf16-copy":
            sampler = LowPrecisionSampler(model, torch.bfloat16)
            sampler.refresh(model)
            generator = sampler.model
        with ctx, torch.no_grad():
            _, answers = generate_greedy(generator, tok, texts, max_new_tokens=args.max_new_tokens)
        correct[variant] = [check_answer(a, ref) for a, ref in zip(answers, items["answer"])]

    n = len(texts)
    print(f"task {args.task} {json.dumps(args.task_config)}, {n} held-out items (split 'test', seed {args.seed}), greedy "
          f"{args.max_new_tokens} tokens; native bf16: {cpu_has_native_bf16()}; {tuning}")
    print(f"{'variant':10s} {'accuracy':>9s} {'95% Wilson':>16s} {'only fp32':>10s} {'only this':>10s} {'McNemar p':>10s}")
    rows = {}
    for variant in args.variants:
        k = sum(correct[variant])
        lo, hi = wilson_interval(k / n, n)
        row = {"correct": k, "n": n, "accuracy": k / n, "wilson95": [lo, hi]}
        if "fp32" in correct and variant != "fp32":
            test = mcnemar_exact(correct["fp32"], correct[variant])
            row.update(only_fp32=test["only_before"], only_this=test["only_after"], mcnemar_p=test["p"])
        rows[variant] = row
        extra = (f"{row['only_fp32']:10d} {row['only_this']:10d} {row['mcnemar_p']:10.3f}" if "mcnemar_p" in row
                 else f"{'':10s} {'':10s} {'':10s}")
        print(f"{variant:10s} {k / n:9.3f} {f'{lo:.3f}-{hi:.3f}':>16s} {extra}")
    print(json.dumps(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": args.task, "task_config": args.task_config, "items": n, "seed": args.seed,
                       "max_new_tokens": args.max_new_tokens, "variants": rows}, f, indent=1)


if __name__ == "__main__":
    main()
