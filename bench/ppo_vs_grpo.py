"""PPO (learned critic) vs GRPO on the same model, data, reward and number of completions per step.

Each algorithm trains in its own subprocess (so peak memory is its own), alternating PPO, GRPO, PPO, …
so machine-load drift hits both alike. Per run: median per-step wall time (TRL's ``step_time``: generation,
scoring, the critic pass and the update), peak memory (CPU max RSS; CUDA max allocated when a GPU is used)
and the mean reward of the first and last 3 logged steps. Printed side by side with PPO/GRPO ratios.

Reward: the fraction of digit characters in the completion (a toy task the tiny model can learn in a few
dozen CPU steps). Both see ``batch`` completions per step: PPO one per prompt, GRPO ``--grpo_generations``.

    python bench/ppo_vs_grpo.py [--steps 20] [--repeats 2] [--model PATH_OR_EMBEDDED_NAME] [--lora]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]


def digits(completions, **kwargs):
    from trl_lab import completion_text

    texts = [completion_text(c) for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def worker(opts: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset

    from trl_lab import GRPOConfig, GRPOTrainer, PPOConfig, PPOTrainer

    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Say {i}"}]} for i in range(256)])
    use_cpu = not torch.cuda.is_available()
    common = dict(
        output_dir=tempfile.mkdtemp(), max_steps=opts.steps, per_device_train_batch_size=opts.batch,
        max_completion_length=opts.completion_length, learning_rate=opts.lr, temperature=1.0, beta=opts.beta,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=use_cpu, bf16=False,
        activation_checkpointing=False, seed=opts.seed, disable_tqdm=True,
    )
    if opts.algo == "ppo":
        trainer_cls, args = PPOTrainer, PPOConfig(num_generations=1, **common)
    else:
        trainer_cls, args = GRPOTrainer, GRPOConfig(num_generations=opts.grpo_generations, **common)
    peft_config = None
    if opts.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = trainer_cls(model=opts.model, reward_funcs=[digits], args=args, train_dataset=dataset,
                          peft_config=peft_config)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    logs = trainer.state.log_history
    rewards = [e["reward"] for e in logs if "reward" in e]
    step_times = [e["step_time"] for e in logs if "step_time" in e]
    return {
        "step_time_s": statistics.median(step_times[1:] or step_times),  # first step includes warm-up
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "reward_first": statistics.mean(rewards[:3]),
        "reward_last": statistics.mean(rewards[-3:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default=None, help="model path or embedded name (default: a tiny random Llama)")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--grpo_generations", type=int, default=4)
    parser.add_argument("--completion_length", type=int, default=6)
    parser.add_argument("--lr", type=float, default=3e-2)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--algo", choices=["ppo", "grpo"], help=argparse.SUPPRESS)  # worker mode
    opts = parser.parse_args()
    if opts.algo:
        print("RESULT " + json.dumps(worker(opts)))
        return

    if opts.model is None:
        from trl_lab.testing import save_tiny_chat_model

        opts.model = str(save_tiny_chat_model(Path(tempfile.mkdtemp()) / "tiny"))
    passthrough = [f"--{k}={v}" for k, v in vars(opts).items() if k not in ("algo", "lora") and v is not None]
    passthrough += ["--lora"] if opts.lora else []
    results: dict[str, list[dict]] = {"ppo": [], "grpo": []}
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for repeat in range(opts.repeats):
        for algo in ("ppo", "grpo"):
            out = subprocess.run([sys.executable, __file__, *passthrough, "--algo", algo],
                                 capture_output=True, text=True, env=env)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if out.returncode != 0 or line is None:
                sys.exit(f"{algo} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
            results[algo].append(json.loads(line[len("RESULT "):]))
            print(f"  run {repeat + 1}/{opts.repeats} {algo}: {results[algo][-1]}", flush=True)

    def med(algo: str, key: str) -> float | None:
        values = [r[key] for r in results[algo] if r[key] is not None]
        return statistics.median(values) if values else None

    device = "cuda" if results["ppo"][0]["peak_cuda_mb"] is not None else "cpu"
    print(f"\nmodel={opts.model} lora={opts.lora} steps={opts.steps} batch={opts.batch} (completions/step; GRPO "
          f"{opts.grpo_generations}/prompt, PPO 1/prompt) repeats={opts.repeats} device={device}; medians over repeats")
    print(f"{'metric':<26}{'PPO':>12}{'GRPO':>12}{'PPO/GRPO':>12}")
    rows = [("step time (s)", "step_time_s"), ("peak CPU RSS (MiB)", "peak_rss_mb"),
            ("peak CUDA alloc (MiB)", "peak_cuda_mb"), ("reward, first 3 steps", "reward_first"),
            (f"reward, last 3 of {opts.steps}", "reward_last")]
    for label, key in rows:
        p, g = med("ppo", key), med("grpo", key)
        if p is None or g is None:
            continue
        ratio = f"{p / g:.3f}" if g else "n/a"
        print(f"{label:<26}{p:>12.4f}{g:>12.4f}{ratio:>12}")


if __name__ == "__main__":
    main()
