"""Overhead of trl_lab's GRPO trainer over bare TRL on the same tiny job.

Both runs train the same tiny random model on the same prompts with the same rewards: trl_lab through
``rewards: [gsm8k, gsm8k_format=0.2]`` (registry lookup, checked wrappers, column checks), bare TRL
with the plugin functions passed directly as ``reward_funcs`` and ``reward_weights``. Runs alternate
(A B A B …) so drift in machine load hits both alike. Goal: median wall-time ratio <= 1.03.

    python bench/overhead.py [--repeats 7] [--steps 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_dataset(n: int):
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + {2 * i}?"}], "answer": str(3 * i)} for i in range(n)]
    )


def config_kwargs(out: str, steps: int) -> dict:
    return dict(
        output_dir=out, max_steps=steps, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=32, learning_rate=1e-4, beta=0.04, logging_steps=steps, report_to="none",
        save_strategy="no", use_cpu=True, bf16=False, activation_checkpointing=False, seed=0, disable_tqdm=True,
    )


def run_lab(model_dir: str, dataset, out: str, steps: int) -> tuple[float, float]:
    from trl_lab import GRPOConfig, GRPOTrainer

    t0 = time.perf_counter()
    args = GRPOConfig(rewards=["gsm8k", "gsm8k_format=0.2"], **config_kwargs(out, steps))
    trainer = GRPOTrainer(model=model_dir, args=args, train_dataset=dataset)
    t1 = time.perf_counter()
    trainer.train()
    return t1 - t0, time.perf_counter() - t1


def run_bare(model_dir: str, dataset, out: str, steps: int) -> tuple[float, float]:
    import trl

    from trl_lab.rewards.gsm8k import gsm8k_correctness, gsm8k_format

    t0 = time.perf_counter()
    args = trl.GRPOConfig(reward_weights=[1.0, 0.2], **config_kwargs(out, steps))
    trainer = trl.GRPOTrainer(
        model=model_dir, reward_funcs=[gsm8k_correctness, gsm8k_format], args=args, train_dataset=dataset
    )
    t1 = time.perf_counter()
    trainer.train()
    return t1 - t0, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from trl_lab.testing import save_tiny_chat_model

    hf_logging.set_verbosity_error()
    torch.set_num_threads(max(1, (os.cpu_count() or 2)))
    dataset = make_dataset(64)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(save_tiny_chat_model(Path(tmp) / "model", hidden_size=64, layers=2))
        run_lab(model_dir, dataset, f"{tmp}/warm", 1)  # warm-up: imports, kernels, the registry's first lookup
        run_bare(model_dir, dataset, f"{tmp}/warm", 1)
        times: dict[str, list[tuple[float, float]]] = {"trl_lab": [], "bare TRL": []}
        for r in range(args.repeats):
            order = [("trl_lab", run_lab), ("bare TRL", run_bare)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                times[name].append(fn(model_dir, dataset, f"{tmp}/{name}{r}", args.steps))
                print(f"repeat {r + 1}/{args.repeats} {name:8s} init {times[name][-1][0]:.3f}s  train {times[name][-1][1]:.3f}s", flush=True)

    print(f"\nGRPO, tiny model (hidden 64, 2 layers), {args.steps} steps x 8 completions, {args.repeats} alternated repeats")
    print(f"{'':10s} {'init median':>12s} {'train median':>13s} {'total median':>13s}")
    med = {}
    for name, rows in times.items():
        init = statistics.median(r[0] for r in rows)
        train = statistics.median(r[1] for r in rows)
        total = statistics.median(r[0] + r[1] for r in rows)
        med[name] = (init, train, total)
        print(f"{name:10s} {init:11.3f}s {train:12.3f}s {total:12.3f}s")
    ratio_train = med["trl_lab"][1] / med["bare TRL"][1]
    ratio_total = med["trl_lab"][2] / med["bare TRL"][2]
    pairs = sorted(a[1] / b[1] for a, b in zip(times["trl_lab"], times["bare TRL"]))
    print(f"ratio trl_lab / bare TRL: train {ratio_train:.3f}, total {ratio_total:.3f}  (goal <= 1.03)")
    print(f"per-repeat train ratios: min {pairs[0]:.3f}, median {statistics.median(pairs):.3f}, max {pairs[-1]:.3f} "
          "(the spread is the machine's noise)")


if __name__ == "__main__":
    main()
