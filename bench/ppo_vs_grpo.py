"""PPO (learned critic) vs GRPO on the same model, data, reward and number of completions per step.

Each algorithm trains in its own subprocess (so peak memory is its own), alternating PPO, GRPO, PPO, …
so machine-load drift hits both alike. Per run: median per-step wall time (TRL's ``step_time``: generation,
scoring, the critic pass and the update), peak memory (CPU max RSS; CUDA max allocated when a GPU is used)
and the mean reward of the first and last 3 logged steps. Printed side by side with PPO/GRPO ratios.

Reward: the fraction of digit characters in the completion (a toy task the tiny model can learn in a few
dozen CPU steps). Both see ``batch`` completions per step: PPO one per prompt, GRPO ``--grpo_generations``.

    python bench/ppo_vs_grpo.py [--steps 20] [--repeats 2] [--model PATH_OR_EMBEDDED_NAME] [--lora]

``--study``: the study's own arms instead (issue 15's arm 3 against arm 1: ``trl_lab.scripts.study --arm ppo`` and
``--arm healthy``, their task, checker reward, embedded model, LoRA and generated tokens), ``--steps`` steps each,
no held-out evaluation, no audit; step time, generated tokens and peak RSS from each run's files:

    python bench/ppo_vs_grpo.py --study --steps 6 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
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


#: --study: the study arms timed, PPO first in each repeat.
STUDY_ARMS = {"ppo": "ppo", "grpo": "healthy"}


def study_run(algo: str, steps: int, seed: int, root: Path, job_flags: list[str] = ()) -> dict:
    """One study arm for ``steps`` steps in its own process (``trl_lab.scripts.study``: no held-out set, no audit);
    its medians from ``metrics.jsonl`` (the first step left out: warm-up) and peak RSS from ``study_run.json``."""
    arm = STUDY_ARMS[algo]
    cmd = [sys.executable, "-m", "trl_lab.scripts.study", "--arm", arm, "--seed", str(seed), "--output_root",
           str(root), "--audit_size", "0", "--max_steps", str(steps), "--heldout_size", "0", "--save_steps", "1000",
           *job_flags]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    run_dirs = list(root.glob(f"arm*_{arm}/seed{seed}"))
    if out.returncode != 0 or len(run_dirs) != 1:
        sys.exit(f"{arm} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    logs = [json.loads(line) for line in (run_dirs[0] / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps_logged = [e for e in logs if "step_time" in e]
    record = json.loads((run_dirs[0] / "study_run.json").read_text())
    tokens = [e["num_tokens"] for e in steps_logged]
    return {
        "step_time_s": statistics.median(e["step_time"] for e in steps_logged[1:] or steps_logged),
        "tokens_per_step": (tokens[-1] - tokens[0]) / max(len(tokens) - 1, 1) if len(tokens) > 1 else tokens[0],
        "peak_rss_mb": record["peak_rss_gb"] * 1024,
        "reward_first": statistics.mean(e["reward"] for e in steps_logged[:3]),
        "reward_last": statistics.mean(e["reward"] for e in steps_logged[-3:]),
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
    parser.add_argument("--study", action="store_true", help="time the study's arms 3 (ppo) and 1 (healthy) instead")
    parser.add_argument("--job_flags", default="", help="--study: more job flags for both arms, one string (the "
                                                        "tests' tiny model)")
    parser.add_argument("--algo", choices=["ppo", "grpo"], help=argparse.SUPPRESS)  # worker mode
    opts = parser.parse_args()
    if opts.study:
        return study_main(opts)
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

    device = "cuda" if results["ppo"][0]["peak_cuda_mb"] is not None else "cpu"
    print(f"\nmodel={opts.model} lora={opts.lora} steps={opts.steps} batch={opts.batch} (completions/step; GRPO "
          f"{opts.grpo_generations}/prompt, PPO 1/prompt) repeats={opts.repeats} device={device}; medians over repeats")
    print_table(results, opts.steps)


def study_main(opts: argparse.Namespace) -> None:
    results: dict[str, list[dict]] = {"ppo": [], "grpo": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(opts.repeats):
            for algo in ("ppo", "grpo"):
                results[algo].append(study_run(algo, opts.steps, opts.seed + repeat, Path(tmp) / f"r{repeat}",
                                               shlex.split(opts.job_flags)))
                print(f"  run {repeat + 1}/{opts.repeats} {algo} (study arm {STUDY_ARMS[algo]}): "
                      f"{results[algo][-1]}", flush=True)
    print(f"\nstudy arms ppo vs healthy, steps={opts.steps} repeats={opts.repeats} seeds {opts.seed}.."
          f"{opts.seed + opts.repeats - 1}; medians over repeats")
    print_table(results, opts.steps, extra=[("tokens / step (num_tokens)", "tokens_per_step")])


def print_table(results: dict[str, list[dict]], steps: int, extra: list[tuple[str, str]] = ()) -> None:
    def med(algo: str, key: str) -> float | None:
        values = [r[key] for r in results[algo] if r.get(key) is not None]
        return statistics.median(values) if values else None

    print(f"{'metric':<26}{'PPO':>12}{'GRPO':>12}{'PPO/GRPO':>12}")
    rows = [("step time (s)", "step_time_s"), *extra, ("peak CPU RSS (MiB)", "peak_rss_mb"),
            ("peak CUDA alloc (MiB)", "peak_cuda_mb"), ("reward, first 3 steps", "reward_first"),
            (f"reward, last 3 of {steps}", "reward_last")]
    for label, key in rows:
        p, g = med("ppo", key), med("grpo", key)
        if p is None or g is None:
            continue
        ratio = f"{p / g:.3f}" if g else "n/a"
        print(f"{label:<26}{p:>12.4f}{g:>12.4f}{ratio:>12}")


if __name__ == "__main__":
    main()
