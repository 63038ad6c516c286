"""Reward throughput: ``learned_rm`` against TRL's own reward-model path, and every reward plugin on 10k completions.

1. ``learned_rm`` vs TRL native. TRL's ``GRPOTrainer`` scores a reward model (an ``nn.Module`` in
   ``reward_funcs``) by rendering every prompt+completion with the chat template, tokenizing the whole batch
   with right padding and running one forward pass under ``torch.inference_mode()``. We mimic that branch
   line for line and time it against ``learned_rm`` (length-sorted batches of ``--rm_batch_size``) on the same
   model and the same GRPO-sized batches of conversational prompts. Runs alternate (A B A B ...), so drift in
   machine load hits both alike. Goal: median ratio (ours / TRL, samples/s) >= 1.0.
2. samples/s of each plugin (sentiment backends, length modes, learned_rm) on ``--n`` completions.

    python bench/reward_throughput.py [--repeats 5] [--n 10000] [--hidden 256 --layers 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = ("the answer is 42 so we add 6 and 7 then multiply great job this is wrong eggs sold per day total "
         "dollars first second step therefore amazing terrible").split()


def make_batch(n: int, seed: int) -> tuple[list, list[str]]:
    rng = random.Random(seed)
    prompts = [[{"role": "system", "content": "Solve the problem. End with '#### <number>'."},
                {"role": "user", "content": " ".join(rng.choices(WORDS, k=rng.randint(15, 40))) + "?"}]
               for _ in range(n)]
    completions = [" ".join(rng.choices(WORDS, k=rng.choice([rng.randint(5, 30), rng.randint(30, 160)])))
                   for _ in range(n)]
    return prompts, completions


def trl_native_scores(model, tokenizer, prompts, completions):
    """GRPOTrainer._calculate_rewards' nn.Module branch (trl 1.16), outside the trainer."""
    import torch
    from trl.data_utils import apply_chat_template, is_conversational

    if is_conversational({"prompt": prompts[0]}):
        messages = [{"messages": p + [{"role": "assistant", "content": c}]} for p, c in zip(prompts, completions)]
        texts = [apply_chat_template(x, tokenizer)["text"] for x in messages]
    else:
        texts = [p + c for p, c in zip(prompts, completions)]
    inputs = tokenizer(text=texts, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False)
    with torch.inference_mode():
        return model(**inputs).logits[:, 0].tolist()


def bench_vs_trl(rm_dir: Path, repeats: int, batch: int, calls: int, rm_batch_size: int) -> None:
    from trl_lab.rewards.learned_rm import LearnedRewardModel

    ours = LearnedRewardModel(str(rm_dir), device="cpu", batch_size=rm_batch_size, max_length=4096)
    model, tokenizer = ours.models[0].classifier.model, ours.models[0].tokenizer
    batches = [make_batch(batch, seed=i) for i in range(calls)]
    a = ours(prompts=batches[0][0], completions=batches[0][1])  # warm-up, and the two paths agree
    b = trl_native_scores(model, tokenizer, *batches[0])
    diff = max(abs(x - y) for x, y in zip(a, b))
    n = batch * calls
    ratios, t_ours, t_trl = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for p, c in batches:
            trl_native_scores(model, tokenizer, p, c)
        t1 = time.perf_counter()
        for p, c in batches:
            ours(prompts=p, completions=c)
        t2 = time.perf_counter()
        t_trl.append(t1 - t0)
        t_ours.append(t2 - t1)
        ratios.append((t1 - t0) / (t2 - t1))
    print(f"learned_rm vs TRL native, {calls} calls x {batch} conversational samples "
          f"(learned_rm batch_size={rm_batch_size}); max |score diff| on batch 0 = {diff:.2e}")
    print(f"  {'TRL native':<24}{n / statistics.median(t_trl):>10.1f} samples/s")
    print(f"  {'learned_rm':<24}{n / statistics.median(t_ours):>10.1f} samples/s")
    print(f"  ratio learned_rm / TRL   median {statistics.median(ratios):.2f}x   "
          f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})   goal >= 1.00x")


def bench_plugins(n: int, tiny_rm: Path, tiny_cls: Path, tiny_tok: Path) -> None:
    from trl_lab import get_reward

    prompts, completions = make_batch(n, seed=123)
    ids = [[0] * (len(c) // 4) for c in completions]
    cases = [
        ("sentiment vader", get_reward("sentiment", backend="vader")),
        ("sentiment hf (tiny)", get_reward("sentiment", backend="hf", path=str(tiny_cls), device="cpu")),
        ("sentiment learned (tiny)", get_reward("sentiment", backend="learned", path=str(tiny_rm), device="cpu")),
        ("learned_rm (tiny)", get_reward("learned_rm", path=str(tiny_rm), device="cpu")),
        ("length penalty ids", get_reward("length", mode="penalty", target=50)),
        ("length brevity chars", get_reward("length", mode="brevity", unit="chars", max_length=500)),
        ("length verbosity tokenizer", get_reward("length", mode="verbosity", max_length=128, tokenizer=str(tiny_tok))),
        ("length soft_overlong ids", get_reward("length", mode="soft_overlong", max_length=64, soft_cache=16)),
    ]
    print(f"\nplugins on {n} completions (conversational prompts, {statistics.fmean(map(len, completions)):.0f} "
          "chars on average)")
    for name, reward in cases:
        t0 = time.perf_counter()
        out = reward(prompts=prompts, completions=completions, completion_ids=ids)
        dt = time.perf_counter() - t0
        assert len(out) == n
        print(f"  {name:<28}{n / dt:>12.0f} samples/s   ({dt:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64, help="samples per reward call (a GRPO step's generations)")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--rm_batch_size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a shared machine, more threads than free cores thrash)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    from trl_lab.testing import build_tiny_classifier, build_tiny_tokenizer, save_tiny_classifier

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rm_dir = tmp / "rm_medium"
        tok = build_tiny_tokenizer()
        model = build_tiny_classifier(tok, num_labels=1, hidden_size=args.hidden, layers=args.layers)
        model.save_pretrained(rm_dir)
        tok.save_pretrained(rm_dir)
        print(f"model: Llama classifier, hidden {args.hidden}, {args.layers} layers, "
              f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; torch threads "
              f"{torch.get_num_threads()}")
        bench_vs_trl(rm_dir, args.repeats, args.batch, args.calls, args.rm_batch_size)
        tiny_rm = save_tiny_classifier(tmp / "rm_tiny", num_labels=1)
        tiny_cls = save_tiny_classifier(tmp / "cls_tiny", num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"})
        bench_plugins(args.n, tiny_rm, tiny_cls, tiny_rm)


if __name__ == "__main__":
    main()
