"""Cost of held-out evaluation: the callback's throughput vs plain batched ``generate``, and its share of training.

1. Throughput (items/s): ``HeldOutAccuracyCallback.evaluate()`` (chat template, greedy batched generation with
   left padding, checker + format scoring, gather, JSONL table) vs a plain loop of ``model.generate`` on the
   same prompts with the same batch size and budget, on the same model (LoRA adapters active, as in training).
   Runs alternate (A B C, then reversed, ...) so machine drift hits all alike. Goal: callback / plain >= 0.95,
   with the callback's KL monitor off (``kl_to_ref=False, entropy=False``: generation and scoring only). The same evaluation with
   ``heldout/kl_to_ref`` on (the default: two teacher-forced forward passes, policy and reference) is timed too,
   and its cost is printed as a share of the evaluation.
2. Share of training time at the default cadence: one GRPO step (the CPU demo's settings: batch 8 x 4
   generations, 128 new tokens, LoRA r16) is timed, and a held-out evaluation of ``--heldout-size`` items
   every ``--eval-steps`` steps is extrapolated from the measured items/s:
   ``eval / (eval_steps * step + eval)``, with the default evaluation: the KL monitor on, over the job's default
   ``--kl-items`` (64) items only, as ``heldout_kl_items`` sets it.

``--cpu-bf16`` runs all of it with the CPU demo's ``cpu_bf16: true`` (bf16 autocast, and rollouts and held-out
answers from the trainer's bf16 copy); the "plain" baseline stays the fp32 model.

    python bench/heldout_eval.py                 # embedded SmolLM2-135M-Instruct, 32 items, 128 new tokens
    python bench/heldout_eval.py --model tiny    # the tiny random model: seconds, for a smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_GSM8K = REPO.parent / "shared" / "data" / "gsm8k"


def heldout(n: int):
    from trl_lab.data.gsm8k import heldout_gsm8k

    if (SHARED_GSM8K / "test.jsonl").exists():
        return heldout_gsm8k(n, source="local", path=str(SHARED_GSM8K), seed=0), "GSM8K test (local files)"
    return heldout_gsm8k(n, source="gsm_symbolic", seed=0), "gsm_symbolic test split"


def plain_generate(model, tokenizer, prompts, batch_size: int, max_new_tokens: int) -> list[str]:
    """The baseline: chat template, left padding, batched greedy ``generate``, decode. Nothing else."""
    import torch

    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    tokenizer.padding_side = "left"
    out_texts = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
            out_texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out_texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--grpo-steps", type=int, default=1, help="timed GRPO steps (after one warm-up step)")
    parser.add_argument("--eval-steps", type=int, default=50, help="evaluation cadence for the training share")
    parser.add_argument("--heldout-size", type=int, default=500, help="held-out size for the training share")
    parser.add_argument("--kl-items", type=int, default=64, help="items the KL monitor measures (heldout_kl_items)")
    parser.add_argument("--cpu-bf16", action="store_true", help="cpu_bf16: true, as the CPU demo config")
    parser.add_argument("--kl-precision", choices=["fp32", "bf16"], default="fp32",
                        help="also time the KL monitor's passes in this precision (heldout_kl_precision) and use it "
                             "for the training share")
    parser.add_argument("--random-adapter", action="store_true",
                        help="draw the LoRA B matrices at random (N(0, 0.01^2), as bench/rollout.py) so the policy "
                             "differs from its reference: the KL is then > 0 and fp32 vs bf16 KL can be compared")
    args = parser.parse_args()

    import torch
    from peft import LoraConfig
    from transformers.utils import logging as hf_logging

    from trl_lab import GRPOConfig, GRPOTrainer
    from trl_lab.callbacks.heldout import HeldOutAccuracyCallback
    from trl_lab.data.gsm8k import load_gsm8k

    hf_logging.set_verbosity_error()
    data, data_name = heldout(args.items)
    tmp = tempfile.TemporaryDirectory()
    if args.model == "tiny":
        from trl_lab.testing import save_tiny_chat_model

        model_path, model_name = str(save_tiny_chat_model(Path(tmp.name) / "tiny")), "tiny random Llama (hidden 32)"
    else:
        from trl_lab.embedded_model import resolve_model_path

        model_path, model_name = str(resolve_model_path("smollm2-135m-instruct")), "SmolLM2-135M-Instruct"

    if (SHARED_GSM8K / "train.jsonl").exists():
        train = load_gsm8k("local", "train", path=str(SHARED_GSM8K), limit=64, seed=42, shuffle=True)
    else:
        train = load_gsm8k("gsm_symbolic", "train", limit=64, seed=42)
    config = GRPOConfig(
        output_dir=f"{tmp.name}/run", rewards=["gsm8k", "gsm8k_format=0.2"], max_steps=1 + args.grpo_steps,
        per_device_train_batch_size=8, num_generations=4, max_completion_length=args.max_new_tokens,
        temperature=0.8, learning_rate=5e-5, beta=0.04, logging_steps=1, report_to="none", save_strategy="no",
        use_cpu=True, bf16=False, activation_checkpointing=False, seed=42, disable_tqdm=True, cpu_bf16=args.cpu_bf16,
    )
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model_path, args=config, train_dataset=train, peft_config=lora)
    if args.random_adapter:
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.01)

    def make_callback(kl_to_ref: bool, kl_precision: str = "fp32") -> HeldOutAccuracyCallback:
        return HeldOutAccuracyCallback(
            data, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, eval_on_train_begin=False,
            eval_on_last_step=False, eval_steps=10**9, metrics_log=False, show_progress=False, kl_to_ref=kl_to_ref,
            entropy=kl_to_ref, kl_precision=kl_precision,
        ).bind(trainer)

    callback, callback_kl = make_callback(False), make_callback(True)
    callbacks = {"callback": callback, "callback+kl": callback_kl}
    if args.kl_precision != "fp32":
        callbacks[f"callback+kl_{args.kl_precision}"] = make_callback(True, args.kl_precision)
    model, tokenizer = trainer.model, trainer.processing_class
    prompts = list(data["prompt"])
    print(f"{model_name}, {args.items} held-out items ({data_name}), batch {args.batch_size}, "
          f"{args.max_new_tokens} new tokens, greedy, {torch.get_num_threads()} threads", flush=True)

    # Warm-up: one short batch through each path (kernels, allocator, the chat template cache).
    model.eval()
    plain_generate(model, tokenizer, prompts[:2], 2, 8)
    warm = HeldOutAccuracyCallback(data.select(range(2)), max_new_tokens=8, metrics_log=False, show_progress=False)
    warm.bind(trainer).evaluate()
    trainer.remove_callback(warm)

    times: dict[str, list[float]] = {name: [] for name in [*callbacks, "plain"]}
    results: dict[str, dict[str, float]] = {}
    for r in range(args.repeats):
        order = list(times) if r % 2 == 0 else list(reversed(times))
        for name in order:
            t0 = time.perf_counter()
            if name in callbacks:
                results[name] = callbacks[name].evaluate()
            else:
                plain_texts = plain_generate(model, tokenizer, prompts, args.batch_size, args.max_new_tokens)
            times[name].append(time.perf_counter() - t0)
            print(f"repeat {r + 1}/{args.repeats} {name:8s} {times[name][-1]:7.2f}s "
                  f"({args.items / times[name][-1]:.2f} items/s)", flush=True)
    metrics, kl_metrics = results["callback"], results["callback+kl"]

    same = sum(a == b for a, b in zip(plain_texts, callback.last_completions))
    print(f"callback and plain greedy completions agree on {same}/{len(prompts)} items", flush=True)

    # One GRPO step at the demo's settings (first step is warm-up).
    step_times: list[float] = []

    class StepTimer(__import__("transformers").TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            step_times.append(time.perf_counter() - self.t0)

    trainer.add_callback(StepTimer())
    model.train()
    trainer.train()
    step = statistics.median(step_times[1:]) if len(step_times) > 1 else step_times[0]

    cb_s, plain_s = statistics.median(times["callback"]), statistics.median(times["plain"])
    kl_name = "callback+kl" if args.kl_precision == "fp32" else f"callback+kl_{args.kl_precision}"
    kl_s = statistics.median(times[kl_name])
    cb_rate, plain_rate = args.items / cb_s, args.items / plain_s
    # The default evaluation: every item generated and scored, the KL monitor on its first `kl_items` items.
    eval_full = args.heldout_size * cb_s / args.items + min(args.heldout_size, args.kl_items) * (kl_s - cb_s) / args.items
    share = eval_full / (args.eval_steps * step + eval_full)
    print()
    print(f"{'':10s} {'median s':>9s} {'items/s':>8s}")
    print(f"{'callback':10s} {cb_s:9.2f} {cb_rate:8.2f}")
    print(f"{'plain':10s} {plain_s:9.2f} {plain_rate:8.2f}")
    for name in (n for n in times if n.startswith("callback+kl")):
        med = statistics.median(times[name])
        print(f"{'+' + name[len('callback+'):]:10s} {med:9.2f} {args.items / med:8.2f}")
    print(f"throughput ratio callback / plain: {cb_rate / plain_rate:.3f}  (goal >= 0.95; KL monitor off)")
    for name in (n for n in times if n.startswith("callback+kl")):
        kl, h = results[name]["heldout/kl_to_ref"], results[name]["heldout/entropy"]
        print(f"heldout/{name[len('callback+'):]} adds {statistics.median(times[name]) / cb_s - 1:+.1%} to an "
              f"evaluation (kl_to_ref {kl:.6f}, entropy {h:.4f}" + (")" if args.random_adapter else
                                                                     "; KL 0 expected: fresh LoRA adapter = reference)"))
    if args.kl_precision != "fp32":
        fp32_kl, low_kl = kl_metrics["heldout/kl_to_ref"], results[kl_name]["heldout/kl_to_ref"]
        print(f"KL {args.kl_precision} - fp32: {low_kl - fp32_kl:+.2e} nats per token"
              + (f" ({(low_kl - fp32_kl) / fp32_kl:+.2%} of the fp32 KL)" if fp32_kl > 0 else ""))
    print(f"last held-out accuracy {metrics['heldout/accuracy']:.3f} ± {metrics['heldout/accuracy_stderr']:.3f}, "
          f"mean length {metrics['heldout/mean_length']:.1f} tokens")
    print(f"GRPO step (batch 8 x 4 generations, {args.max_new_tokens} new tokens, LoRA r16): median {step:.2f}s "
          f"over {max(1, len(step_times) - 1)} step(s)")
    print(f"bf16 {config.bf16}, generation_dtype {config.generation_dtype}, sampler "
          f"{type(trainer.sampler).__name__ if trainer.sampler else None}")
    print(f"held-out eval of {args.heldout_size} items (KL on {min(args.heldout_size, args.kl_items)}, "
          f"{args.kl_precision}) every "
          f"{args.eval_steps} steps: {eval_full:.1f}s per eval vs "
          f"{args.eval_steps * step:.1f}s of training -> eval is {share:.1%} of wall time "
          f"({eval_full / step:.1f} GRPO steps' worth per eval)")
    tmp.cleanup()


if __name__ == "__main__":
    main()
