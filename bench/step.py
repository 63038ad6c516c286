"""Seconds per GRPO step and peak memory on the CPU demo's setting: trl_lab's GRPOTrainer against bare TRL.

Both train the embedded SmolLM2-135M-Instruct with LoRA (r 16, every linear layer) on the same 16 GSM8K-style
prompts, 8 completions of up to 128 tokens per step, beta 0.04, the same seed and the same two rewards (trl_lab
through ``rewards:``, bare TRL with the plugin functions as ``reward_funcs``). Each run is its own process, so its
peak RSS is its own; runs alternate (trl, trl_lab, trl, trl_lab ...) so drift in machine load hits both alike.

Reported per variant (medians over the steps after the first, which warms caches): seconds per step, split into
TRL's own timed phases (generation, the reference and policy log-prob passes) and the rest (backward, optimizer);
peak RSS; and the loss of each step, which must match between the variants: trl_lab's speed-ups are exact in effect
(same completions, same loss up to float rounding). trl_lab runs the demo config's split of the training pass into two
micro-batches of 4 (``gradient_accumulation_steps: 2``: one generation of 8 completions per step, as bare TRL's,
and the same loss). A third variant, ``trl_lab+bf16``, adds ``cpu_bf16: true`` (bf16
autocast for the training passes and a bf16 copy for generation, on CPUs with native bf16): faster and not exact,
so its completions and losses differ from the other two (``bench/rollout.py`` and ``bench/sampler_quality.py``
measure how much).

    python bench/step.py [--steps 4] [--repeats 1]

Time nothing while another CPU job runs: one busy neighbour slows a 2-thread run 3-6x.
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
import time
from collections import defaultdict

os.environ.setdefault("HF_HUB_OFFLINE", "1")


VARIANTS = ("trl", "trl_lab", "trl_lab+bf16")


def config_kwargs(out: str, steps: int) -> dict:
    return dict(
        output_dir=out, max_steps=steps, per_device_train_batch_size=8, num_generations=4, max_completion_length=128,
        temperature=0.8, learning_rate=5e-5, beta=0.04, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, activation_checkpointing=False, seed=42, disable_tqdm=True, log_completions=False,
    )


def worker(variant: str, steps: int) -> dict:
    import torch
    import trl
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl.extras import profiling

    from trl_lab.data.gsm8k import load_gsm8k
    from trl_lab.embedded_model import resolve_model_path

    phases: dict[str, list[float]] = defaultdict(list)
    real_log = profiling.ProfilingContext._log_metrics

    def record(self, duration):
        phases[self.name.split(".", 1)[-1]].append(duration)
        return real_log(self, duration)

    profiling.ProfilingContext._log_metrics = record
    step_seconds: list[float] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds.append(time.perf_counter() - self.start)

    model = resolve_model_path("smollm2-135m-instruct")
    data = load_gsm8k("gsm_symbolic", "train", limit=16, seed=0)
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    out = tempfile.mkdtemp()
    if variant == "trl":
        from trl_lab.rewards.gsm8k import gsm8k_correctness, gsm8k_format

        args = trl.GRPOConfig(reward_weights=[1.0, 0.2], **config_kwargs(out, steps))
        trainer = trl.GRPOTrainer(model=model, reward_funcs=[gsm8k_correctness, gsm8k_format], args=args,
                                  train_dataset=data, peft_config=peft, callbacks=[StepTimer()])
    else:
        from trl_lab import GRPOConfig, GRPOTrainer

        # As the CPU demo config: the loss and backward in two micro-batches of 4 (TRL's gradient accumulation; the
        # same 8 completions per step, one generation, and the same loss -- TRL's dapo loss normalises by the
        # generation batch's tokens), which halves the activations kept for the backward.
        kwargs = {**config_kwargs(out, steps), "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
        args = GRPOConfig(rewards=["gsm8k", "gsm8k_format=0.2"], **kwargs, cpu_bf16=variant == "trl_lab+bf16")
        trainer = GRPOTrainer(model=model, args=args, train_dataset=data, peft_config=peft, callbacks=[StepTimer()])
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"variant": variant, "threads": torch.get_num_threads(), "step_seconds": step_seconds,
            "phases": dict(phases), "losses": losses, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "cpu_tuning": repr(getattr(trainer, "cpu_tuning", None)), "bf16": bool(args.bf16),
            "generation_dtype": getattr(args, "generation_dtype", None)}


def _median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.steps)))
        return
    runs: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(args.repeats):
        for variant in args.variants:
            out = subprocess.run([sys.executable, __file__, "--worker", variant, "--steps", str(args.steps)],
                                 capture_output=True, text=True, check=False)
            line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{variant} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
            runs[variant].append(json.loads(line[len("RESULT "):]))
            print(f"[repeat {repeat}] {variant}: steps {['%.1f' % s for s in runs[variant][-1]['step_seconds']]}",
                  flush=True)
    summary = {}
    for variant, results in runs.items():
        step = statistics.median(_median_after_first(r["step_seconds"]) for r in results)
        phases = defaultdict(list)
        for r in results:
            for name, values in r["phases"].items():
                if name in ("transformers.generate", "_get_per_token_logps_and_entropies", "compute_loss"):
                    phases[name].append(sum(values[1:]) / max(1, len(r["step_seconds"]) - 1)
                                        if len(r["step_seconds"]) > 1 else sum(values))
        summary[variant] = {"step_s": step, "phases_s": {k: statistics.median(v) for k, v in phases.items()},
                            "peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in results),
                            "losses": results[0]["losses"], "cpu_tuning": results[0]["cpu_tuning"],
                            "threads": results[0]["threads"], "bf16": results[0]["bf16"],
                            "generation_dtype": results[0]["generation_dtype"]}
    names = list(summary)
    base = summary.get("trl", summary[names[0]])["step_s"]
    print("\n" + f"{'':34s}" + "".join(f"{n:>14s}" for n in names))
    print(f"{'seconds per step':34s}" + "".join(f"{summary[n]['step_s']:14.1f}" for n in names))
    print(f"{'  x bare TRL':34s}" + "".join(f"{base / summary[n]['step_s']:14.2f}" for n in names))
    for phase in sorted({p for n in names for p in summary[n]["phases_s"]}):
        print(f"{'  ' + phase:34s}" + "".join(f"{summary[n]['phases_s'].get(phase, float('nan')):14.1f}" for n in names))
    print(f"{'peak RSS (GB)':34s}" + "".join(f"{summary[n]['peak_rss_gb']:14.2f}" for n in names))
    for n in names:
        print(f"losses {n:14s} {summary[n]['losses']}")
        print(f"  cpu_tuning {summary[n]['cpu_tuning']}; bf16 {summary[n]['bf16']}, generation_dtype "
              f"{summary[n]['generation_dtype']}; threads {summary[n]['threads']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
